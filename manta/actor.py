"""`ray.actor`: actor classes, handles and methods, and `exit_actor`."""

from __future__ import annotations

from manta._private.remote import ActorClass, ActorClassInheritanceException, ActorHandle, ActorMethod
from manta._private.runtime import context
from manta._private.runtime.context import ExitActor, current_task

__all__ = ["ActorClass", "ActorClassInheritanceException", "ActorHandle", "ActorMethod", "exit_actor"]


def exit_actor() -> None:
    """Ends the actor this is called in, on purpose: the call that made it
    gets no result (its caller sees the actor died), calls not started are
    dropped, the actor is not restarted, and its process exits through its
    atexit handlers. Called anywhere but in an actor, raises TypeError."""
    rt = context.current()
    ctx = current_task.get()
    if rt is None or rt.executor is None or ctx is None or ctx.actor_id is None:
        raise TypeError("exit_actor API is called on a non-actor worker.")
    raise ExitActor("The actor exited on purpose: exit_actor() was called.")
