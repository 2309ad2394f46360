"""The client API server's messages: a driver on a machine that is not a
node (`manta.init("manta://HOST:PORT")`) and the head, and the head and the
proxy driver it starts for that client (docs/client.md).

The head only relays: a `ClientCall` carries one call of the client
runtime (`client/calls.py`, a decoder of its own) to the client's proxy, and
its `ClientReply` back, so the head never decodes what a client asks of its
proxy. Large values cross in many calls of at most `chunk_bytes` each.
"""

# Annotations are not postponed: see protocol/messages.py.

from manta._private.protocol.structs import Msg


class ClientConnect(Msg, frozen=True):
    """Client -> head: a new session, or `resume` (the session id the head gave) after a lost connection."""

    resume: bytes = b""
    namespace: str = ""
    entrypoint: str = ""
    version: str = ""
    rid: int = 0


class ClientSession(Msg, frozen=True):
    """Head -> client: the session and the job its proxy runs."""

    session_id: bytes
    job_id: int
    namespace: str
    node_id: bytes
    # The proxy's address: the owner of every object the client makes.
    address: str
    session_name: str
    chunk_bytes: int
    resumed: bool = False
    # The cluster CA's PEM when TLS is on, which a client that pinned a hash checks.
    ca: bytes = b""
    rid: int = 0


# A value's chunk at least this large is sent as it is, around its call's
# encoding (chunks.split), not copied into it: with the relay's and the
# answer's frames sent the same way, the bytes of a large get are copied
# once in the client and by nobody else on the way.
AS_IS = 256 * 1024
EMPTY = memoryview(b"")


class ClientCall(Msg, frozen=True):
    """Client -> head -> proxy: one encoded `client.calls` request."""

    # Decoded as a view into the received frame: a value's chunk is not
    # copied out of it on the way, only when it is encoded again.
    body: memoryview
    rid: int = 0


class ClientReply(Msg, frozen=True):
    """Proxy -> head -> client: the answer to a ClientCall."""

    body: memoryview  # as ClientCall's
    rid: int = 0


class ProxyAttach(Msg, frozen=True):
    """Proxy -> head: the proxy started for a session is up (`key` was given to it alone, on its stdin)."""

    key: bytes
    job_id: int
    namespace: str
    node_id: bytes
    address: str
    rid: int = 0


class ClientLog(Msg, frozen=True):
    """Proxy -> head -> client: what the job's tasks printed."""

    prefix: str
    is_err: bool
    text: str


REPLIES = (ClientSession, ClientReply)

def chunk_bytes(max_frame: int) -> int:
    """The chunk size of a session: its frames stay within what a connection
    takes whole into one buffer (`FrameDecoder.PREALLOC`, 8 MiB), and under the frame limit."""
    return max(64 << 10, min((8 << 20) - (64 << 10), max_frame // 2))

