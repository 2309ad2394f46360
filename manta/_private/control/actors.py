"""Actor lifecycle, without I/O.

    PENDING --created--> ALIVE --worker died, restarts left--> RESTARTING --created--> ALIVE
       |                   |                                       |
       +------ failed / killed / out of restarts / released -------+--> DEAD

Every transition is listed in `_TRANSITIONS`; anything else is a bug and
raises `IllegalTransition`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from manta._private.protocol import messages as m

PENDING = m.ActorStatus.PENDING
ALIVE = m.ActorStatus.ALIVE
RESTARTING = m.ActorStatus.RESTARTING
DEAD = m.ActorStatus.DEAD

_TRANSITIONS = {
    (PENDING, ALIVE),
    (PENDING, DEAD),
    (PENDING, RESTARTING),
    (ALIVE, RESTARTING),
    (ALIVE, DEAD),
    (RESTARTING, ALIVE),
    (RESTARTING, DEAD),
    (RESTARTING, RESTARTING),
}


# Why an actor died, and what its callers are told, in the words of the head
# (and of local mode, which keeps its actors itself).
NO_SUCH_ACTOR = "The actor does not exist."
KILLED = "The actor was killed by ray.kill()."
OUT_OF_SCOPE = "The actor was terminated because all references to it went out of scope."


def creation_failed(class_name: str, error_text: str) -> str:
    text = error_text or "(the worker sent no description of the error)"
    return f"The actor {class_name} died because of an error raised in its creation task: {text}"


def name_taken(name: str, namespace: str) -> str:
    return (
        f"The name {name} (namespace={namespace}) is already taken. Please use a different name or get "
        f"the existing actor using ray.get_actor('{name}', namespace='{namespace}')"
    )


def no_named_actor(name: str, namespace: str) -> str:
    return (
        f"Failed to look up actor with name '{name}' in namespace '{namespace}'. This could be because "
        f"1. You are trying to look up a named actor you didn't create. 2. The named actor died. "
        f"3. You did not use a namespace matching the namespace of the actor."
    )


class IllegalTransition(Exception):
    """An internal bug: the actor table was asked for an impossible change."""


@dataclass(eq=False)
class ActorEntry:
    spec: m.ActorSpec
    state: m.ActorStatus = PENDING
    address: str = ""
    worker_id: bytes = b""
    node_id: bytes = b""
    epoch: int = 0
    restarts: int = 0
    death_cause: str = ""
    death_kind: m.ErrorKind | None = None
    no_restart: bool = False
    # The worker process running it now (0 while none does; not kept across
    # a head restart).
    pid: int = 0
    # A lease for its worker is asked and not yet answered. Every event that
    # may make room (a node joins, bundles are placed again, a report) tries
    # to schedule pending actors; without this mark each would ask for one
    # more worker, and the extras would hold the resources (a bundle's, say)
    # that the actor's own tasks then wait for.
    leasing: bool = False
    waiters: list[Any] = field(default_factory=list)

    @property
    def actor_id(self) -> bytes:
        return self.spec.actor_id

    def move(self, new: m.ActorStatus) -> None:
        if (self.state, new) not in _TRANSITIONS:
            raise IllegalTransition(f"actor {self.actor_id.hex()}: {self.state} -> {new}")
        self.state = new

    def created(self, address: str, worker_id: bytes) -> None:
        self.move(ALIVE)
        self.address = address
        self.worker_id = worker_id
        self.epoch += 1

    def died(self, cause: str) -> bool:
        """The actor's worker is gone; returns True if it should restart."""
        self.address = ""
        self.worker_id = b""
        limit = self.spec.max_restarts
        if not self.no_restart and (limit < 0 or self.restarts < limit):
            self.restarts += 1
            self.move(RESTARTING)
            return True
        self.kill(cause)
        return False

    def kill(self, cause: str, kind: m.ErrorKind | None = None) -> None:
        if self.state != DEAD:
            self.move(DEAD)
            self.death_cause = cause
            self.death_kind = kind

    def restartable(self) -> bool:
        """Whether the actor is, or would be, brought back after its worker dies."""
        if self.state == DEAD or self.no_restart:
            return False
        if self.state in (PENDING, RESTARTING):
            return True
        limit = self.spec.max_restarts
        return limit < 0 or self.restarts < limit

    def validate(self) -> None:
        assert self.state in m.ActorStatus, self.state
        if self.state is ALIVE:
            assert self.address and self.worker_id and self.epoch > 0, "alive without a worker"
        if self.leasing:
            assert self.state in (PENDING, RESTARTING, DEAD), "a lease asked for a live actor"
        if self.state is DEAD:
            assert self.death_cause, "dead without a cause"
        limit = self.spec.max_restarts
        assert limit < 0 or self.restarts <= limit, f"{self.restarts} restarts past max_restarts={limit}"

    def answers(self, known_epoch: int) -> bool:
        """Whether a WaitActor with this epoch can be answered now."""
        return self.state == DEAD or (self.state == ALIVE and self.epoch > known_epoch)
