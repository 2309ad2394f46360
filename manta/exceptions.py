"""Public exceptions, with Ray's names so `except ray.exceptions.X` works."""

from __future__ import annotations

import sys
from typing import Any


class RayError(Exception):
    """Base of every error manta raises on behalf of the cluster."""


class RaySystemError(RayError):
    pass


class AuthenticationError(RayError):
    """A connection's credential was missing or wrong. manta always checks
    one (there is no mode without it)."""

    _DOC = "https://docs.ray.io/en/latest/ray-security/token-auth.html"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(
            f"{message}. The cluster's token is in its session directory, or set MANTA_TOKEN "
            f"(token authentication, as Ray's: {self._DOC})."
        )


class AuthorizationError(RayError, PermissionError):
    """The request's principal may not do this. Nothing was changed; the
    refusal is in the cluster's audit log."""


class QuotaExceededError(RayError):
    """The request would take its job or token past a quota (beyond Ray,
    which has none): the message names the quota, its limit and the use.
    Nothing was changed; other jobs are not affected."""


class RayTaskError(RayError):
    """A task or actor method raised.

    `get` raises an instance of a class derived from both this and the
    original exception's type, so `except ValueError` still catches it.
    """

    def __init__(
        self,
        function_name: str = "",
        traceback_str: str = "",
        cause: BaseException | None = None,
        proctitle: str = "",
        pid: int = 0,
        ip: str = "127.0.0.1",
        actor_repr: str | None = None,
        actor_id: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle
        self.pid = pid
        self.ip = ip
        self.actor_repr = actor_repr
        self.actor_id = actor_id
        # Not super(): in the class derived from the cause's type, that would
        # run the user's __init__ (which may reset its fields, or need more
        # than a message).
        Exception.__init__(self, self._message())

    def _message(self) -> str:
        cause = f"{type(self.cause).__name__}" if self.cause is not None else "Error"
        return (
            f"{cause}: {self.function_name}() failed (pid={self.pid}, ip={self.ip})\n"
            f"{self.traceback_str}"
        )

    def __str__(self) -> str:
        return self._message()

    def as_instanceof_cause(self) -> RayTaskError:
        """An exception that is both a RayTaskError and the cause's type."""
        cause = self.cause
        while isinstance(cause, RayTaskError) and cause.cause is not None:
            cause = cause.cause  # a task that re-raised a nested task's error
        if cause is None or isinstance(cause, RayTaskError):
            return self
        cause_cls = type(cause)
        if not isinstance(cause, Exception):
            return self
        try:
            cls = _dual_class(cause_cls)
            err: RayTaskError = cls.__new__(cls)  # type: ignore[call-overload]
            # Keep the cause's own attributes (args, custom fields) visible.
            err.__dict__.update(getattr(cause, "__dict__", {}))
            err.args = cause.args
            RayTaskError.__init__(
                err,
                self.function_name,
                self.traceback_str,
                cause,
                self.proctitle,
                self.pid,
                self.ip,
                self.actor_repr,
                self.actor_id,
            )
            err.args = cause.args
            return err
        except Exception:
            # A class that refuses subclasses (a "final" one): raised as a
            # RayTaskError only, as Ray does, and said so. (logging is imported
            # here: this module is on init()'s way to starting the head.)
            import logging

            logging.getLogger(__name__).warning(
                "User exception type %s in RayTaskError can't be subclassed! This exception is raised as "
                "RayTaskError only. You can use `ray_task_error.cause` to access the user exception. "
                "Failure in subclassing: %s", cause_cls, sys.exc_info()[1],
            )
            return self

    def __reduce__(self) -> Any:
        return (
            _rebuild_task_error,
            (
                self.function_name,
                self.traceback_str,
                _Cause(self.cause) if self.cause is not None and not isinstance(self.cause, RayError) else self.cause,
                self.pid,
                self.ip,
                self.actor_repr,
                self.actor_id,
            ),
        )


_dual_classes: dict[type, type] = {}


def _dual_class(cause_cls: type) -> type:
    cls = _dual_classes.get(cause_cls)
    if cls is None:

        def __str__(self: RayTaskError) -> str:
            return RayTaskError._message(self)

        cls = type(
            f"RayTaskError({cause_cls.__name__})",
            (RayTaskError, cause_cls),
            {"__str__": __str__, "__reduce__": RayTaskError.__reduce__},
        )
        cls.__module__ = __name__
        _dual_classes[cause_cls] = cls
    return cls


class _Cause:
    """A user's exception as it travels inside a RayTaskError: rebuilt from
    its class, args and attributes without calling its `__init__`, which
    may need more than its args (pickle's default calls it with the args
    alone, so `__init__(self, msg, code)` failed to unpickle and a field set
    in `__init__` came back as its default)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> Any:
        e = self.error
        return (_rebuild_cause, (type(e), e.args, dict(getattr(e, "__dict__", {}))))


def _rebuild_cause(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    try:
        error = cls.__new__(cls, *args)
        error.args = args
        error.__dict__.update(state)
        return error
    except Exception as e:  # noqa: BLE001 - a class that cannot be rebuilt so still reports
        return RayError(f"the task raised {cls.__qualname__}{args!r}, which could not be rebuilt here: {e}")


def _rebuild_task_error(
    function_name: str,
    traceback_str: str,
    cause: BaseException | _Cause | None,
    pid: int,
    ip: str,
    actor_repr: str | None,
    actor_id: str | None,
) -> RayTaskError:
    if isinstance(cause, _Cause):
        cause = cause.error
    return RayTaskError(
        function_name, traceback_str, cause, "", pid, ip, actor_repr, actor_id
    ).as_instanceof_cause()


class CrossLanguageError(RayError):
    pass


class TaskCancelledError(RayError):
    def __init__(self, task_id: Any = None, error_message: str | None = None) -> None:
        self.task_id = task_id
        self.error_message = error_message
        super().__init__(error_message or f"Task {task_id} was cancelled")

    def __reduce__(self) -> Any:
        return (type(self), (self.task_id, self.error_message))


class GetTimeoutError(RayError, TimeoutError):
    pass


class WorkerCrashedError(RayError):
    def __init__(self, message: str = "The worker died unexpectedly while executing this task.") -> None:
        super().__init__(message)


class RayActorError(RayError):
    def __init__(self, cause: Any = None, error_msg: str | None = None, actor_id: str | None = None) -> None:
        self.actor_id = actor_id
        self.error_msg = error_msg or "The actor died unexpectedly before finishing this task."
        self.cause = cause
        super().__init__(self.error_msg)

    def __reduce__(self) -> Any:
        return (type(self), (None, self.error_msg, self.actor_id))


class ActorDiedError(RayActorError):
    pass


class ActorUnavailableError(RayActorError):
    pass


class ActorUnschedulableError(RayError):
    pass


class LocalRayletDiedError(RayError):
    pass


class NodeDiedError(RayError):
    pass


class TaskUnschedulableError(RayError):
    pass


class TaskPlacementGroupRemoved(RayError):
    """The placement group was removed: what its `ready()` raises."""


class ObjectStoreFullError(RayError):
    pass


class OutOfDiskError(RayError):
    pass


class OutOfMemoryError(RayError):
    pass


class ObjectLostError(RayError):
    def __init__(self, object_ref_hex: str = "", owner_address: str = "", call_site: str = "") -> None:
        self.object_ref_hex = object_ref_hex
        self.owner_address = owner_address
        self.call_site = call_site
        super().__init__(self._msg())

    def _msg(self) -> str:
        why = f" ({self.call_site})" if self.call_site else ""
        return f"Failed to retrieve object {self.object_ref_hex}: the object was lost{why}."

    def __reduce__(self) -> Any:
        return (type(self), (self.object_ref_hex, self.owner_address, self.call_site))


class ObjectFetchTimedOutError(ObjectLostError):
    pass


class ReferenceCountingAssertionError(ObjectLostError):
    def _msg(self) -> str:
        return f"Object {self.object_ref_hex} was already freed: its reference count reached zero."


class OwnerDiedError(ObjectLostError):
    def _msg(self) -> str:
        return (
            f"Failed to retrieve object {self.object_ref_hex}: its owner "
            f"({self.owner_address}) has died."
        )


class ObjectReconstructionFailedError(ObjectLostError):
    pass


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectReconstructionFailedError):
    pass


class ObjectReconstructionFailedLineageEvictedError(ObjectReconstructionFailedError):
    pass


class RuntimeEnvSetupError(RayError):
    pass


class PendingCallsLimitExceeded(RayError):
    pass


class AsyncioActorExit(RayError):
    pass


class RaySerializationError(RayError, TypeError):
    """A value could not be serialized; a TypeError, as pickling errors are."""


class ObjectRefTypeError(TypeError, ValueError):
    """get() was given something that is not an ObjectRef (Ray raises ValueError)."""


class PlasmaObjectNotAvailable(RayError):
    pass


__all__ = [name for name, obj in list(globals().items()) if isinstance(obj, type) and issubclass(obj, BaseException)]
