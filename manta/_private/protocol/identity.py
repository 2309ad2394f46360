"""Who is on the other end of a connection: principals, roles, credentials.

Pure data, carried on the wire (a lease asked for on a job's behalf names
the job's principal) and inside signed passes. The cryptography that
makes and checks them is in `manta._private.auth`.

Three kinds of identity, each with its own credential:

- the cluster (head and node agents), which hold the cluster secret;
- jobs: a driver and the workers running its tasks, each holding a pass
  signed by the cluster and scoped to the job;
- people and API clients, holding a token made by `manta token create`.
"""

# Annotations are not postponed: see protocol/messages.py.

import enum

import msgspec

from manta._private.protocol.structs import Record


class Role(enum.IntEnum):
    """What a principal may do; each role may do what the ones below it may."""

    VIEW = 1  # read cluster state
    SUBMIT = 2  # run jobs: tasks, actors, objects, KV, placement groups, in its namespaces
    ADMIN = 3  # anything a person may do: other namespaces, stopping the cluster, tokens
    CLUSTER = 4  # the head and node agents: node reports, leases on a job's behalf


class Kind(enum.IntEnum):
    NODE = 1  # the head or a node agent
    JOB = 2  # a driver, or a worker running a job's tasks
    PERSON = 3  # a token's holder that has not registered a job (the CLI, a driver starting)


class Quota(Record, frozen=True):
    """The most a token's jobs (all of them together) or any one job may hold
    at once; None: no limit (auth/quotas.py decides).

    The head enforces what passes through it (actors, CPUs, KV bytes). The
    node agents enforce store bytes and queued lease requests on their node,
    from the quota signed into the job's pass; the job's own processes
    bound the tasks they have submitted."""

    max_actors: int | None = None
    # CPUs held by live actors and placement groups' bundles.
    max_cpus: float | None = None
    # Bytes of keys and values it wrote to the KV store and that are still there.
    max_kv_bytes: int | None = None
    # Tasks submitted and not yet finished (queued or running), per submitting process.
    max_pending_tasks: int | None = None
    # Bytes of the objects it created in one node's store (in memory or spilled) and not yet freed.
    max_store_bytes: int | None = None

    def limits(self) -> bool:
        return any(v is not None for v in (self.max_actors, self.max_cpus, self.max_kv_bytes,
                                             self.max_pending_tasks, self.max_store_bytes))


class Principal(Record, frozen=True):
    kind: Kind
    role: Role
    name: str
    # The namespaces it may act in; empty: every namespace.
    namespaces: tuple[str, ...] = ()
    job_id: int = 0
    node_id: bytes = b""
    worker_id: bytes = b""
    # The person's token it acts for ("" for the cluster itself).
    token_id: str = ""
    # Seconds since the epoch after which it is not valid; 0: never.
    expires: float = 0.0
    # A job's quotas, signed into its pass so that node agents enforce them
    # without asking the head: its own (Config.job_max_*) and its token's
    # (which bounds all the token's jobs together).
    quota: Quota | None = None
    token_quota: Quota | None = None

    def may(self, role: Role) -> bool:
        return self.role >= role

    def in_namespace(self, namespace: str) -> bool:
        return self.role >= Role.ADMIN or not self.namespaces or namespace in self.namespaces

    def describe(self) -> str:
        return f"{self.name} (role {self.role.name.lower()})"


class Credential(Record, frozen=True):
    """What a process presents when it connects, as handed to it.

    A pass (`pass_blob`, signed by the cluster in `pass_sig`, naming the
    public half of `key`), or a person's token (`token`). `cluster_key` is
    the cluster's public key, to check the passes of the processes it talks
    to. Nothing here lets its holder act as anyone else.
    """

    pass_blob: bytes = b""
    pass_sig: bytes = b""
    key: bytes = b""  # the private half of the pass's key (raw Ed25519)
    cluster_key: bytes = b""
    token: str = ""


NOBODY = Principal(kind=Kind.PERSON, role=Role.VIEW, name="unauthenticated", expires=-1.0)


class Claims(Record, frozen=True):
    """The signed body of a pass: who, and the public key that proves it."""

    principal: Principal
    key: bytes


_claims_encoder = msgspec.msgpack.Encoder()
_claims_decoder = msgspec.msgpack.Decoder(Claims)


def encode_claims(claims: Claims) -> bytes:
    return _claims_encoder.encode(claims)


def decode_claims(blob: bytes) -> Claims:
    return _claims_decoder.decode(blob)
