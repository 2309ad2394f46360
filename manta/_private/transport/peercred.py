"""Who is at the other end of a Unix socket, as the kernel says (SO_PEERCRED).

A peer's messages can claim any pid; the kernel's record of the process
that connected cannot be forged. A node agent checks a local process's
registration against it, because it later signals that pid.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True)
class PeerCred:
    pid: int
    uid: int
    gid: int


# Linux has SO_PEERCRED; elsewhere a Unix socket's peer is not known by pid.
SUPPORTED = hasattr(socket, "SO_PEERCRED")


def is_unix(transport: Any) -> bool:
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


def peer_cred(transport: Any) -> PeerCred | None:
    """The process that connected `transport`'s Unix socket (None over TCP,
    on a closed transport, or where the platform cannot say)."""
    if not SUPPORTED or not is_unix(transport):
        return None
    try:
        raw = transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCred(pid, uid, gid)
