"""`@remote` functions and actor classes, actor handles and methods."""

from __future__ import annotations

import inspect
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from msgspec.structs import replace

from manta import exceptions as exc
from manta._private import dag, session
from manta._private.ids import ActorID, function_id
from manta._private.options import check_namespace, concurrency_groups
from manta._private.options import validate as validate_options
from manta._private.protocol import messages as m
from manta._private.runtime import context
from manta._private.runtime.concurrency import check_group_sizes
from manta._private.runtime.context import current_task
from manta._private.runtime.packaging import PACKAGE_FIELDS, check_runtime_env
from manta._private.runtime.serialization import describe_unpicklable, dumps_function
from manta._private.scheduling.resources import fits, to_units

COMMON_OPTIONS = {
    "num_cpus", "num_gpus", "resources", "memory", "object_store_memory", "accelerator_type",
    "runtime_env", "scheduling_strategy", "placement_group", "placement_group_bundle_index",
    "placement_group_capture_child_tasks", "label_selector", "enable_task_events", "_metadata",
    "_labels", "name", "fallback_strategy",
}
TASK_OPTIONS = COMMON_OPTIONS | {
    "num_returns", "max_retries", "retry_exceptions", "max_calls", "_generator_backpressure_num_objects",
}
ACTOR_OPTIONS = COMMON_OPTIONS | {
    "namespace", "lifetime", "get_if_exists", "max_concurrency", "max_restarts", "max_task_retries",
    "max_pending_calls", "concurrency_groups", "allow_out_of_order_execution",
}
METHOD_OPTIONS = {"num_returns", "concurrency_group", "max_task_retries", "retry_exceptions", "name",
                  "enable_task_events", "_generator_backpressure_num_objects"}

DEFAULT_MAX_RETRIES = 3
# A function or class pickled larger than this is refused (Ray's threshold:
# every worker that runs it loads it whole).
FUNCTION_SIZE_LIMIT = 10**8


def check_options(options: dict[str, Any], valid: set[str], what: str) -> None:
    bad = sorted(set(options) - valid)
    if bad:
        raise ValueError(
            f"Invalid option keyword {', '.join(map(repr, bad))} for {what}. "
            f"Valid ones are: {', '.join(sorted(k for k in valid if not k.startswith('_')))}."
        )
    # Types and values first (num_returns, resources a dict, ...), in Ray's words.
    validate_options(options)
    res = options.get("resources")
    if res is not None:
        for k in ("CPU", "GPU"):
            if k in res:
                raise ValueError(
                    f"Use the '{k.lower().replace('cpu', 'num_cpus').replace('gpu', 'num_gpus')}' "
                    f"option instead of resources={{'{k}': ...}}."
                )
    strategy = options.get("scheduling_strategy")
    if isinstance(strategy, str) and strategy not in ("DEFAULT", "SPREAD"):
        raise ValueError(f"scheduling_strategy must be 'DEFAULT' or 'SPREAD' or a strategy object, got {strategy!r}")
    lifetime = options.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError(f"lifetime must be 'detached' or 'non_detached', got {lifetime!r}")


def placement_of(options: dict[str, Any]) -> m.Placement:
    """The wire form of a `scheduling_strategy` option (and a task's
    `label_selector`)."""
    placement = _strategy_of(options)
    selector = options.get("label_selector")
    if selector:
        placement = replace(placement, selector={str(k): str(v) for k, v in selector.items()})
    return placement


def _strategy_of(options: dict[str, Any]) -> m.Placement:
    strategy = options.get("scheduling_strategy")
    if strategy is None or strategy == "DEFAULT":
        return m.Placement()
    if strategy == "SPREAD":
        return m.Placement(kind=m.PlacementKind.SPREAD)
    node_id = getattr(strategy, "node_id", None)
    if isinstance(node_id, str):
        try:
            raw = bytes.fromhex(node_id)
        except ValueError:
            raise ValueError(f"NodeAffinitySchedulingStrategy: node_id {node_id!r} is not a hex node id") from None
        return m.Placement(kind=m.PlacementKind.NODE_AFFINITY, node_id=raw, soft=bool(getattr(strategy, "soft", False)))
    # Placement group strategies are accepted; bundles come with placement groups.
    return m.Placement()


def _check_fits(resources: dict[str, float], bundles: list[dict[str, float]], index: int,
                placing: dict[str, float] | None, what: str) -> None:
    """Raises ValueError, as Ray does at .remote(), for a request no bundle
    it may use can hold. `placing` is what placement needs when more than the
    request (an actor asks 1 CPU to be placed, 0 to run, unless it says)."""
    need = {k: v for k, v in {**resources, **(placing or {})}.items() if v > 0}
    if "bundle" in need:
        raise ValueError("'bundle' is a name placement groups reserve for themselves: it cannot be asked for")
    if not any(bundles):
        return  # the group's bundles are not known here (a captured group)
    usable = bundles if index < 0 else [bundles[index]]
    units = to_units(need)
    if not any(fits(units, to_units(b)) for b in usable):
        # Worded as Ray words it (its tests match the text): the request as
        # the user wrote it, whole numbers without a fraction.
        shown = {k: int(v) if float(v).is_integer() else v for k, v in need.items()}
        where = "any bundles for the placement group" if index < 0 else f"bundle {index} of the placement group"
        held = usable if index < 0 else usable[0]
        running = to_units({k: v for k, v in resources.items() if v > 0})
        if placing and any(fits(running, to_units(b)) for b in usable):
            cpus = placing.get("CPU", 0)
            raise ValueError(
                f"Cannot schedule {what} with the placement group because the actor requires "
                f"{int(cpus) if float(cpus).is_integer() else cpus} CPU for creation, but it cannot fit into "
                f"{where}, {held}. Consider creating a placement group with CPU resources."
            )
        raise ValueError(
            f"Cannot schedule {what} with the placement group because the resource request {shown} "
            f"cannot fit into {where}, {held}."
        )


def in_placement_group(options: dict[str, Any], resources: dict[str, float], what: str, inherit: bool = True,
                       placing: dict[str, float] | None = None) -> dict[str, float]:
    """Resources renamed onto a placement group's bundle, when the options name
    one (or, if `inherit`, when the current task's group captures its children),
    after checking a bundle can hold them."""
    strategy = options.get("scheduling_strategy")
    pg = getattr(strategy, "placement_group", None) or options.get("placement_group")
    if pg is None and strategy is None and inherit:
        # Inside a task whose group captures its children.
        ctx = current_task.get()
        pg = ctx.placement_group if ctx is not None else None
    if pg is None or pg == "default":
        return resources
    index = getattr(strategy, "placement_group_bundle_index", None)
    if index is None:
        index = options.get("placement_group_bundle_index", -1)
    pg_id = pg.id.binary()
    if index >= pg.bundle_count or index < -1:
        raise ValueError(
            f"placement_group_bundle_index {index} is out of range: the group has {pg.bundle_count} bundles"
        )
    _check_fits(resources, pg.bundle_specs, index, placing, what)
    from manta._private.scheduling.bundles import bundle_resource

    renamed = {bundle_resource(k, pg_id, index): v for k, v in resources.items()}
    if not renamed:
        # Asks for nothing, but must still land on one of the group's nodes.
        renamed = {bundle_resource("bundle", pg_id, index): 0.001}
    return renamed


def captured_group(options: dict[str, Any], inherit: bool = True) -> tuple[bytes, int]:
    """(group id, bundle count) if children of this task stay in its group."""
    strategy = options.get("scheduling_strategy")
    pg = getattr(strategy, "placement_group", None) or options.get("placement_group")
    capture = getattr(strategy, "placement_group_capture_child_tasks", None)
    if capture is None:
        capture = options.get("placement_group_capture_child_tasks")
    if pg is None or pg == "default" or not capture:
        ctx = current_task.get() if inherit else None
        inherited = ctx.placement_group if ctx is not None and strategy is None else None
        if inherited is not None:
            return inherited.id.binary(), inherited.bundle_count
        return b"", 0
    return pg.id.binary(), pg.bundle_count


def resource_request(options: dict[str, Any], default_cpus: float) -> dict[str, float]:
    # Custom resources first, then CPU, GPU and memory: Ray's order, which
    # its messages (and tests of them) show.
    out: dict[str, float] = {k: float(v) for k, v in (options.get("resources") or {}).items()}
    cpus = options.get("num_cpus")
    out["CPU"] = float(default_cpus if cpus is None else cpus)
    gpus = options.get("num_gpus")
    if gpus:
        out["GPU"] = float(gpus)
    mem = options.get("memory")
    if mem:
        out["memory"] = float(mem)
    return {k: v for k, v in out.items() if v}


def runtime_env_vars(options: dict[str, Any]) -> dict[str, str]:
    """The env_vars of the options' runtime_env, checked (its packages are
    added per call, by `with_packages`)."""
    runtime_env = options.get("runtime_env") or {}
    check_runtime_env(runtime_env)
    return dict(runtime_env.get("env_vars") or {})


def names_packages(options: dict[str, Any]) -> bool:
    runtime_env = options.get("runtime_env") or {}
    return any(runtime_env.get(k) for k in PACKAGE_FIELDS)


def with_packages(rt: Any, env: dict[str, str], options: dict[str, Any]) -> dict[str, str]:
    """`env` naming the options' packages and pip environment, worked out
    once per runtime (workers are pooled by environment, so they serve one).
    The task's fields replace the job's, as in Ray."""
    runtime_env = options.get("runtime_env")
    if not runtime_env or not names_packages(options):
        return env
    return {**env, **rt.package_env(runtime_env)}


def env_vars_of(rt: Any, options: dict[str, Any]) -> dict[str, str]:
    return with_packages(rt, {**rt.env_vars, **runtime_env_vars(options)}, options)


class _Exported:
    """A pickled function or class, exported once per runtime."""

    def __init__(self, obj: Any, what: str) -> None:
        self._obj = obj
        self._what = what
        self._exported: tuple[bytes, bytes] | None = None  # (fn_id, blob)

    def fn_id(self, rt: Any) -> bytes:
        # Read once: another thread may be exporting it at this moment. The
        # pair is published together (one assignment), so a thread that
        # sees it sees both.
        exported = self._exported
        if exported is None:
            try:
                blob = dumps_function(self._obj)
            except Exception as e:
                raise exc.RaySerializationError(
                    f"Could not serialize {self._what}: {describe_unpicklable(self._obj, e)}. "
                    f"Functions and classes are pickled with cloudpickle; check what they "
                    f"capture (locks, sockets, open files cannot be pickled)."
                ) from e
            if len(blob) > FUNCTION_SIZE_LIMIT:
                raise ValueError(
                    f"The {self._what} is too large ({len(blob) / 2**20:.1f} MiB > the limit of "
                    f"{FUNCTION_SIZE_LIMIT / 2**20:.1f} MiB). Check that it does not capture a large "
                    f"array or other object from its scope: put that in the object store (put()) and "
                    f"pass the ref instead."
                )
            exported = self._exported = (function_id(blob), blob)
        fn_id, blob = exported
        rt.export_function(fn_id, blob, self._obj)
        return fn_id


class Signature:
    """A function's parameters, checked against a call's arguments. The
    common shape (positional parameters only, called positionally) is two
    comparisons; anything else goes through `inspect.Signature.bind`."""

    __slots__ = ("_sig", "_least", "_most", "_what")

    def __init__(self, sig: inspect.Signature | None, what: str) -> None:
        self._sig = sig
        self._what = what
        self._least = self._most = -1
        if sig is not None:
            params = list(sig.parameters.values())
            if all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
                self._most = len(params)
                self._least = sum(1 for p in params if p.default is p.empty)

    @classmethod
    def of(cls, fn: Any, what: str) -> Signature:
        try:
            return cls(inspect.signature(fn), what)
        except (TypeError, ValueError):  # a builtin without one: not checked
            return cls(None, what)

    @classmethod
    def of_method(cls, actor_cls: type, name: str) -> Signature:
        fn = getattr(actor_cls, name, None)
        what = f"{actor_cls.__name__}.{name}()"
        if fn is None or (name == "__init__" and fn is object.__init__):
            return cls(inspect.Signature([]), what) if fn is not None else cls(None, what)
        raw = inspect.getattr_static(actor_cls, name, None)
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return cls(None, what)
        if not isinstance(raw, (staticmethod, classmethod)):
            params = list(sig.parameters.values())[1:]  # self
            sig = sig.replace(parameters=params)
        return cls(sig, what)

    def __reduce__(self) -> Any:
        # Travels with actor handles: names, kinds and whether each has a
        # default (its value need not be picklable, and binding ignores it).
        shape = None
        if self._sig is not None:
            shape = [(p.name, int(p.kind), p.default is not p.empty) for p in self._sig.parameters.values()]
        return (_rebuild_signature, (shape, self._what))

    def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not kwargs and self._least <= len(args) <= self._most:
            return
        if self._sig is None:
            return
        try:
            self._sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self._what}: {e}") from None


_P = inspect.Parameter
_KINDS = {int(k): k for k in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD, _P.VAR_POSITIONAL, _P.KEYWORD_ONLY,
                              _P.VAR_KEYWORD)}


def _rebuild_signature(shape: list[tuple[str, int, bool]] | None, what: str) -> Signature:
    if shape is None:
        return Signature(None, what)
    params = [
        inspect.Parameter(name, _KINDS[kind], default=None if has_default else inspect.Parameter.empty)
        for name, kind, has_default in shape
    ]
    return Signature(inspect.Signature(params), what)


@dataclass(frozen=True, slots=True)
class _TaskPlan:
    """What a remote function's options say about every call, worked out once."""

    name: str
    num_returns: int
    backpressure: int
    max_retries: int
    retry_exceptions: bool | tuple[type, ...]
    resources: dict[str, float]
    placement: m.Placement
    capture: tuple[bytes, int]
    # The options name a placement group or strategy: the call never takes
    # the group of the task it is made from.
    own_strategy: bool
    # runtime_env env_vars of the options, added to the job's.
    env_vars: dict[str, str]
    # The options name packages or a pip environment (looked up per call).
    packages: bool


def returns_of(value: Any, fn: Any) -> int:
    """TaskSpec.num_returns for the option's value: a generator function
    streams unless it says otherwise (Ray 2.60's default)."""
    generator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    if value is None:
        return m.STREAMING if generator else 1
    if value in ("streaming", "dynamic") and fn is not None and not generator:
        raise ValueError(
            f"num_returns={value!r} can only be used with generator functions (functions that "
            f"yield), and {getattr(fn, '__qualname__', fn)} is not one"
        )
    if value == "streaming":
        return m.STREAMING
    if value == "dynamic":
        return m.DYNAMIC
    return int(value)


def backpressure_of(options: dict[str, Any]) -> int:
    n = options.get("_generator_backpressure_num_objects")
    if n is None:
        return -1
    if not isinstance(n, int) or isinstance(n, bool) or n == 0 or n < -1:
        raise ValueError(f"_generator_backpressure_num_objects must be a positive integer (or -1 for none), got {n!r}")
    return n


def wrap_returns(rt: Any, refs: list[Any], n: int) -> Any:
    """What .remote() gives back for `n` returns."""
    if n == 1 or n == m.DYNAMIC:
        return refs[0]
    if n == m.STREAMING:
        return rt.generator(refs[0])
    if n == 0:
        return None
    return refs


def _task_plan(options: dict[str, Any], default_name: str, fn: Any) -> _TaskPlan:
    num_returns = returns_of(options.get("num_returns"), fn)
    retry = options.get("retry_exceptions", False)
    if isinstance(retry, list):
        retry = tuple(retry)
    own = options.get("scheduling_strategy") is not None or options.get("placement_group") is not None
    return _TaskPlan(
        name=options.get("name") or default_name,
        num_returns=num_returns,
        backpressure=backpressure_of(options),
        max_retries=options.get("max_retries", DEFAULT_MAX_RETRIES),
        retry_exceptions=retry,
        resources=in_placement_group(options, resource_request(options, 1), default_name, inherit=False),
        placement=placement_of(options),
        capture=captured_group(options, inherit=False),
        own_strategy=own,
        env_vars=runtime_env_vars(options),
        packages=names_packages(options),
    )


class _OptionsWrapper:
    def __init__(self, target: Any, options: dict[str, Any]) -> None:
        self._target = target
        self._options = options
        self._plan: _TaskPlan | None = None

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        target = self._target
        if isinstance(target, RemoteFunction):
            plan = self._plan
            if plan is None:
                plan = self._plan = _task_plan(self._options, target._name, target._function)
            return target._call(args, kwargs, self._options, plan)
        return target._submit_with(tuple(args), kwargs, self._options)

    def options(self, **options: Any) -> _OptionsWrapper:
        return self._target.options(**{**self._options, **options})

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A DAG node of this call, with these options (see dag.py)."""
        return _node(self, self._target, args, kwargs)


class _Remotable:
    """What remote functions and actor classes share: options and `.remote()`."""

    _valid: set[str]
    _options: dict[str, Any]

    def _what(self) -> str:
        raise NotImplementedError

    def options(self, **options: Any) -> _OptionsWrapper:
        merged = {**self._options, **options}
        check_options(merged, self._valid, self._what())
        return _OptionsWrapper(self, merged)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._submit_with(args, kwargs, self._options)

    def _remote(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Ray's `_remote(args=..., kwargs=..., **options)`: `.options(**options).remote(*args, **kwargs)`."""
        merged = {**self._options, **options}
        check_options(merged, self._valid, self._what())
        return self._submit_with(tuple(args or ()), dict(kwargs or {}), merged)

    def _submit_with(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> Any:
        raise NotImplementedError

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A DAG node of this call, run by its `execute()` (see dag.py)."""
        return _node(self, self, args, kwargs)


def _node(target: Any, kind: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if isinstance(kind, RemoteFunction):
        return dag.FunctionNode(target, args, kwargs)
    return dag.ClassNode(target, args, kwargs)


class RemoteFunction(_Remotable):
    _valid = TASK_OPTIONS

    def __init__(self, function: Any, options: dict[str, Any]) -> None:
        check_options(options, TASK_OPTIONS, "a remote function")
        self._function = function
        self._options = options
        self._name = getattr(function, "__name__", "function")
        self._exported = _Exported(function, f"remote function {self._name}")
        self.__name__ = self._name
        self.__doc__ = function.__doc__
        self.__module__ = getattr(function, "__module__", None)  # type: ignore[assignment]
        self.__qualname__ = getattr(function, "__qualname__", self._name)
        self.__wrapped__ = function
        self._plan: _TaskPlan | None = None
        self._signature = Signature.of(function, f"{self._name}()")
        returns_of(options.get("num_returns"), function)  # a wrong kind fails here, as in Ray

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Remote functions cannot be called directly. Instead of running "
            f"'{self._name}()', try '{self._name}.remote()'."
        )

    def _what(self) -> str:
        return f"remote function {self._name}"

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        plan = self._plan
        if plan is None:
            plan = self._plan = _task_plan(self._options, self._name, self._function)
        return self._call(args, kwargs, self._options, plan)

    def _submit_with(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> Any:
        return self._call(args, kwargs, options, _task_plan(options, self._name, self._function))

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any], plan: _TaskPlan) -> Any:
        self._signature.check(args, kwargs)
        rt = context._runtime or session.runtime()
        resources, capture = plan.resources, plan.capture
        if not plan.own_strategy:
            ctx = current_task.get()
            if ctx is not None and ctx.placement_group is not None:
                # Inside a task whose group captures its children.
                resources = in_placement_group(options, resource_request(options, 1), self.__qualname__)
                capture = captured_group(options)
        env = rt.env_vars
        if plan.env_vars:
            env = {**env, **plan.env_vars}
        if plan.packages:
            env = with_packages(rt, env, options)
        refs = rt.submit_task(
            fn_id=self._exported.fn_id(rt),
            name=plan.name,
            args=args,
            kwargs=kwargs,
            num_returns=plan.num_returns,
            resources=resources,
            placement=plan.placement,
            capture=capture,
            max_retries=plan.max_retries,
            retry_exceptions=plan.retry_exceptions,
            env_vars=env,
            backpressure=plan.backpressure,
        )
        return wrap_returns(rt, refs, plan.num_returns)


# -- actors -------------------------------------------------------------------


def method(*args: Any, **kwargs: Any) -> Any:
    """`@manta.method(num_returns=N)` on an actor method."""
    if args and callable(args[0]) and len(args) == 1 and not kwargs:
        return args[0]
    bad = set(kwargs) - METHOD_OPTIONS
    if bad or args:
        raise ValueError(
            f"@method takes only keyword options {sorted(METHOD_OPTIONS)}, got {sorted(bad) or args}"
        )

    def decorate(fn: Any) -> Any:
        fn.__manta_method_options__ = dict(kwargs)
        return fn

    return decorate


def _method_table(cls: type) -> tuple[dict[str, int], bool, dict[str, dict[str, Any]]]:
    """Each method's num_returns, whether any is async, and each method's
    options from @method that its calls carry (max_task_retries,
    retry_exceptions, concurrency_group)."""
    methods: dict[str, int] = {}
    retry_opts: dict[str, dict[str, Any]] = {}
    is_async = False
    for name, member in inspect.getmembers(cls):
        fn = member
        if not callable(fn) or (name.startswith("__") and name not in ("__call__",)):
            continue
        opts = getattr(fn, "__manta_method_options__", {})
        methods[name] = returns_of(opts.get("num_returns"), fn)
        kept = {k: v for k, v in opts.items()
                if k in ("max_task_retries", "retry_exceptions", "concurrency_group", "_generator_backpressure_num_objects")}
        if kept:
            retry_opts[name] = kept
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            is_async = True
    # Every actor has these (the executor answers them): ready, and a
    # graceful end after the calls before it.
    methods.setdefault("__ray_ready__", 1)
    methods.setdefault("__ray_call__", 1)
    methods.setdefault("__ray_terminate__", 1)
    return methods, is_async, retry_opts


class ActorClassInheritanceException(TypeError):
    """A class tried to inherit from an actor class."""


class ActorClass(_Remotable):
    _valid = ACTOR_OPTIONS

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        # `class B(A)` with A an actor class: refuse clearly, as Ray does.
        raise ActorClassInheritanceException(
            f"Inheriting from actor classes is not currently supported. Inherit from "
            f"{self.__name__}'s plain class instead and make the subclass an actor with @remote."
        )

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        check_options(options, ACTOR_OPTIONS, f"actor class {cls.__name__}")
        self._cls = cls
        self._options = options
        self._exported = _Exported(cls, f"actor {cls.__name__}")
        self._methods, self._is_async, self._method_opts = _method_table(cls)
        # Arguments are bound at .remote(), as Ray does: a wrong call fails there.
        self._signatures = {name: Signature.of_method(cls, name) for name in [*self._methods, "__init__"]}
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__
        self.__module__ = cls.__module__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self.__name__}()', "
            f"use '{self.__name__}.remote()'."
        )

    def __getattr__(self, name: str) -> Any:
        # The class's own attributes (constants, static and class methods)
        # read through the actor class, as in Ray.
        cls = self.__dict__.get("_cls")
        if cls is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(cls, name)

    def __dir__(self) -> list[str]:
        methods = [n for n in self.__dict__.get("_methods", {}) if not n.startswith("__ray_")]
        return sorted(set(super().__dir__()) | set(methods))

    def _what(self) -> str:
        return f"actor class {self.__name__}"

    def _submit_with(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> ActorHandle:
        self._signatures["__init__"].check(args, kwargs)
        if options.get("object_store_memory") is not None:
            warnings.warn("Setting 'object_store_memory' for actors is deprecated: the object store is "
                          "shared by the whole node and an actor's share of it is not reserved",
                          DeprecationWarning, stacklevel=3)
        rt = session.runtime()
        name = options.get("name")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"actor name must be a string, got {type(name).__name__}")
        if name == "":
            raise ValueError("Actor name cannot be an empty string: give it a name, or None for no name")
        name = name or ""
        check_namespace(options.get("namespace"))
        namespace = options.get("namespace") or rt.namespace
        detached = options.get("lifetime") == "detached"
        if options.get("get_if_exists") and not name:
            raise ValueError("get_if_exists=True requires a name for the actor")
        max_concurrency = options.get("max_concurrency")
        if max_concurrency is None:
            max_concurrency = 1000 if self._is_async else 1
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive integer, got {max_concurrency!r}")
        groups = concurrency_groups(options.get("concurrency_groups"))
        try:
            check_group_sizes(groups)
        except ValueError as e:
            # As in Ray, the actor fails as it starts, and says why there; the
            # driver is told here too, as its program goes on.
            print(f"manta: actor {self.__name__}: {e}", file=sys.stderr)
        out_of_order = options.get("allow_out_of_order_execution")
        concurrent = self._is_async or max_concurrency > 1
        if out_of_order is False and concurrent:
            raise ValueError(
                f"actor {self.__name__}: allow_out_of_order_execution=False is not possible for an "
                f"{'async' if self._is_async else 'threaded (max_concurrency > 1)'} actor, whose calls "
                f"run concurrently and so in any order"
            )
        max_restarts = options.get("max_restarts", 0)
        max_task_retries = options.get("max_task_retries", 0)
        # As in Ray: an actor that names no resources (memory aside) is
        # placed with 1 CPU and holds none while it lives; one that names
        # any (num_gpus, even 0, custom resources, an accelerator type)
        # holds 1 CPU for its life unless it gives num_cpus.
        names_some = (options.get("num_gpus") is not None or bool(options.get("resources"))
                      or options.get("accelerator_type") is not None)
        default_cpus = 1.0 if names_some else 0.0
        placing = {"CPU": 1.0} if options.get("num_cpus") is None and not names_some else None
        running = resource_request(options, default_cpus)
        resources = in_placement_group(options, running, self.__qualname__, placing=placing)
        extra: dict[str, float] = {}
        if placing:
            placed = in_placement_group(options, {**running, **placing}, self.__qualname__)
            extra = {k: v - resources.get(k, 0.0) for k, v in placed.items() if v > resources.get(k, 0.0)}
        fn_id = self._exported.fn_id(rt)
        capture_pg, capture_bundles = captured_group(options)
        spec_args, kwnames, pinned = rt.prepare_args(args, kwargs, f"{self.__name__}.__init__")
        actor_id = rt.ids.next()
        creation = m.TaskSpec(
            task_id=rt.ids.next(),
            job_id=rt.job_id,
            name=f"{self.__name__}.__init__",
            fn_id=fn_id,
            args=spec_args,
            kwarg_names=kwnames,
            num_returns=0,
            owner=rt.address,
            resources=resources,
            actor_id=actor_id,
            actor_creation=True,
            actor_name=name or "",
            max_concurrency=max_concurrency,
            concurrency_groups=groups,
            is_async_actor=self._is_async,
            env_vars=env_vars_of(rt, options),
            namespace=namespace,
            driver=rt.driver_address,
            placement=placement_of(options),
            capture_pg=capture_pg,
            capture_pg_bundles=capture_bundles,
            code_path=rt.code_path,
        )
        spec = m.ActorSpec(
            actor_id=actor_id,
            job_id=rt.job_id,
            class_name=self.__name__,
            creation=creation,
            name=name,
            namespace=namespace,
            detached=detached,
            max_restarts=max_restarts,
            get_if_exists=bool(options.get("get_if_exists")),
            qualname=self.__qualname__,
            out_of_order=bool(out_of_order) or concurrent,
            label_selector={str(k): str(v) for k, v in (options.get("label_selector") or {}).items()},
            placing=extra,
            owner_worker=b"" if rt.is_driver else rt.worker_id,
        )
        reply = rt.create_actor(spec, pinned)
        # A named actor too, as in Ray: get_actor() handles are weak, so it
        # ends with the last of its creator's handles (and of the handles
        # passed on from them) unless it is detached.
        hold = None if detached or reply.existing else rt.hold_actor(reply.actor_id)
        return ActorHandle(
            reply.actor_id, self.__name__, self._methods, max_task_retries, rt, hold, self._signatures,
            self._method_opts,
        )


class ActorHandle:
    def __init__(
        self,
        actor_id: bytes,
        class_name: str,
        methods: dict[str, int],
        max_task_retries: int,
        rt: Any,
        hold: Any = None,
        signatures: dict[str, Signature] | None = None,
        method_opts: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self._actor_id = ActorID(actor_id)
        # Per-method options from @method (retries), where the class was seen.
        self._method_opts = method_opts or {}
        # The methods' parameters, where the class is known here (a handle
        # that came from elsewhere leaves the check to the actor).
        self._signatures = signatures or {}
        self._class_name = class_name
        self._methods = methods
        self._max_task_retries = max_task_retries
        self._rt = rt
        # The creator's handles, and those passed on from them, keep the actor
        # alive through the ref they carry (see Actors.hold); get_actor() and
        # current_actor handles carry none, so they are weak, as in Ray.
        self._hold = hold

    def __getattr__(self, name: str) -> ActorMethod:
        methods = self.__dict__.get("_methods")
        if methods is None or name not in methods:
            raise AttributeError(
                f"'{self.__dict__.get('_class_name', 'Actor')}' actor has no method '{name}'"
            )
        return ActorMethod(self, name, methods[name], self.__dict__.get("_method_opts", {}).get(name))

    def __repr__(self) -> str:
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __dir__(self) -> list[str]:
        # Only its methods (and __init__), as Ray's handles: what completes.
        return sorted(set(self.__dict__.get("_methods", {})) | {"__init__"})

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __reduce__(self) -> Any:
        # The hold travels as a ref: pinned in flight, borrowed where it lands.
        return (
            _rebuild_handle,
            (self._actor_id._id, self._class_name, self._methods, self._max_task_retries, self._signatures,
             self._method_opts, self._hold),
        )


def _rebuild_handle(
    actor_id: bytes, class_name: str, methods: dict[str, int], retries: int,
    signatures: dict[str, Signature] | None = None,
    method_opts: dict[str, dict[str, Any]] | None = None,
    hold: Any = None,
) -> ActorHandle:
    rt = context.require()
    return ActorHandle(actor_id, class_name, methods, retries, rt, hold, signatures, method_opts)


class ActorMethod:
    def __init__(self, handle: ActorHandle, name: str, num_returns: int, options: dict[str, Any] | None = None) -> None:
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._options = options or {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actor methods cannot be called directly. Instead of running "
            f"'object.{self._name}()', try 'object.{self._name}.remote()'."
        )

    def options(self, **options: Any) -> ActorMethod:
        bad = set(options) - METHOD_OPTIONS
        if bad:
            raise ValueError(
                f"Invalid option keyword {', '.join(map(repr, sorted(bad)))} for actor method "
                f"{self._name}. Valid ones are: {', '.join(sorted(METHOD_OPTIONS))}."
            )
        n = returns_of(options["num_returns"], None) if "num_returns" in options else self._num_returns
        return ActorMethod(self._handle, self._name, n, {**self._options, **options})

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        h = self._handle
        sig = h._signatures.get(self._name)
        # The common shape checked inline (Signature.check's first test).
        if sig is not None and (kwargs or not sig._least <= len(args) <= sig._most):
            sig.check(args, kwargs)
        rt = h._rt
        num_returns = self._num_returns
        options = self._options
        if options:
            retries = options.get("max_task_retries", h._max_task_retries)
            retry_on = options.get("retry_exceptions", False)
            if isinstance(retry_on, list):
                retry_on = tuple(retry_on)
            group = options.get("concurrency_group") or ""
            backpressure = backpressure_of(options)
        else:
            retries, retry_on, group, backpressure = h._max_task_retries, False, "", -1
        refs = rt.submit_actor_task(
            h._actor_id._id, self._name, args, kwargs, num_returns, retries,
            f"{h._class_name}.{self._name}", retry_on, group, backpressure,
        )
        if num_returns == 1:
            return refs[0]
        return wrap_returns(rt, refs, num_returns)

    def _remote(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Ray's `_remote(args=..., kwargs=..., **options)` on a method."""
        target = self.options(**options) if options else self
        return target.remote(*(args or ()), **(kwargs or {}))

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A DAG node of this call on this actor (see dag.py)."""
        return dag.ClassMethodNode(self._handle, self._name, args, kwargs, self._options)


def handle_from_state(rt: Any, state: m.ActorState) -> ActorHandle:
    cls = rt.load_function(state.fn_id)
    methods, _, _ = _method_table(cls)
    return ActorHandle(state.actor_id, state.class_name, methods, 0, rt)


def remote(*args: Any, **kwargs: Any) -> Any:
    """`@remote` or `@remote(**options)` on a function or class."""
    if len(args) == 1 and not kwargs and (inspect.isfunction(args[0]) or inspect.isclass(args[0]) or callable(args[0])):
        return _make(args[0], {})
    if args or not kwargs:
        # `@remote()` included: Ray refuses it too.
        raise TypeError(
            "@remote takes either a function/class or keyword options, e.g. @remote(num_cpus=2)"
        )
    check_options(kwargs, TASK_OPTIONS | ACTOR_OPTIONS, "@remote")

    def decorate(obj: Any) -> Any:
        return _make(obj, kwargs)

    return decorate


def _make(obj: Any, options: dict[str, Any]) -> Any:
    if inspect.isclass(obj):
        return ActorClass(obj, options)
    if inspect.iscoroutinefunction(obj):
        # A task runs in a plain worker thread with no event loop to await on;
        # only actors have one (Ray refuses this too).
        raise ValueError(
            f"a remote task cannot be an 'async def' function ({getattr(obj, '__qualname__', obj)}): "
            f"run the coroutine inside a plain function with asyncio.run(), "
            f"or make it a method of an actor, whose async methods run on its event loop"
        )
    if callable(obj):
        return RemoteFunction(obj, options)
    raise TypeError(f"@remote expects a function or a class, got {type(obj).__name__}")
