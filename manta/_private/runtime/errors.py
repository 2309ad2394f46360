"""Errors at the runtime's boundary: wire error kinds to public exceptions, once.

A failed request comes back as `RemoteError(kind, message)`, its kind an
`ErrorKind` checked when the reply was decoded; it becomes the public
exception here and nowhere else. A task's own exception travels pickled
(`format_task_error`), wrapped in a `RayTaskError` that carries its traceback.
"""

from __future__ import annotations

import os
import traceback

from manta import exceptions as exc
from manta._private.protocol.messages import ErrorKind
from manta._private.transport.connection import RemoteError

_PUBLIC: dict[ErrorKind, type[Exception]] = {
    ErrorKind.VALUE: ValueError,
    ErrorKind.KEY: KeyError,
    ErrorKind.RUNTIME: RuntimeError,
    ErrorKind.SYSTEM: exc.RaySystemError,
    ErrorKind.OBJECT_LOST: exc.ObjectLostError,
    ErrorKind.STORE_FULL: exc.ObjectStoreFullError,
    ErrorKind.OUT_OF_DISK: exc.OutOfDiskError,
    ErrorKind.UNSCHEDULABLE: exc.TaskUnschedulableError,
    ErrorKind.FREED: exc.ReferenceCountingAssertionError,
    ErrorKind.RUNTIME_ENV_SETUP: exc.RuntimeEnvSetupError,
    ErrorKind.AUTHORIZATION: exc.AuthorizationError,
    ErrorKind.QUOTA: exc.QuotaExceededError,
}


def error_from_remote(e: RemoteError) -> Exception:
    """The public exception a requester raises for an error reply."""
    return _PUBLIC[e.kind](e.message)


def error_of_kind(kind: ErrorKind, message: str) -> Exception:
    return _PUBLIC[kind](message)


def format_task_error(name: str, e: BaseException) -> exc.RayTaskError:
    """A task's exception, with its traceback, as its caller will see it."""
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return exc.RayTaskError(name, tb, e, pid=os.getpid())
