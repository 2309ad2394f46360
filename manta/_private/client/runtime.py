"""The runtime of a driver that is not on a node: `manta.init("manta://HOST:PORT")`.

It fills the same slot as the core runtime (`runtime/interface.py`), so the
whole public API runs unchanged on top of it, and forwards each call over
one connection to the head, which relays it to this client's proxy driver
(`client/proxy.py`). The proxy owns the objects; an ObjectRef here names
one it holds for us, counted here and let go there when the last one here
goes (`Release`, batched). Values are serialized and deserialized here
only, and cross in chunks of at most `chunk_bytes` (docs/client.md).

A lost connection is retried for `Config.client_reconnect_s`, resuming the
session: refs stay valid, and calls that read (get, wait) are asked again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import pickle
import ssl
import threading
from collections.abc import Callable
from typing import Any

from manta import exceptions as exc
from manta._private.auth import pki, tls_contexts
from manta._private.auth.credentials import Identity
from manta._private.client import calls as c
from manta._private.config import Config
from manta._private.ids import TaskIds, new_worker_id, task_of
from manta._private.protocol import client_messages as cm
from manta._private.protocol import messages as m
from manta._private.protocol.chunks import Parts
from manta._private.protocol.identity import Credential, Role
from manta._private.runtime.bridge import IOThread
from manta._private.runtime.errors import error_from_remote
from manta._private.runtime.generators import ObjectRefGenerator, Stream
from manta._private.runtime.metrics import MetricsRegistry
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.objects import (
    INLINE_MAX,
    as_raised,
    get_of_a_non_ref,
    inline,
    inline_budget,
    negative_timeout,
    put_of_a_ref,
    wait_num_returns,
    wait_of_a_non_list,
    wait_of_duplicates,
)
from manta._private.runtime.packaging import package_env
from manta._private.runtime.serialization import deserialize, load_function, serialize_checked
from manta._private.runtime.story import StoryRecord
from manta._private.runtime.submission import qualified_name
from manta._private.transport.connection import AuthRejected, Connection, ConnectionLost, RemoteError, connect
from manta._private.transport.gate import Limits
from manta._private.transport.tls_setup import tls_wanted
from manta._private.version import VERSION

log = logging.getLogger(__name__)

SCHEMES = ("manta://", "ray://")
# Reads asked again after a reconnect (asking twice changes nothing).
IDEMPOTENT = (c.Get, c.Chunk, c.Wait, c.Release, c.Borrow)
# Chunks of one value in flight at once, each way.
WINDOW = 4


class _Entry:
    """A ref the client holds: its live ObjectRefs here, and the owner's proof."""

    __slots__ = ("local", "cap", "owner")

    def __init__(self, owner: str, cap: bytes) -> None:
        self.local = 1
        self.owner = owner
        self.cap = cap


class _Table:
    def __init__(self) -> None:
        self.entries: dict[bytes, _Entry] = {}


class ClientRuntime:
    is_driver = True
    executor = None

    def __init__(
        self, address: str, credential: Credential, config: Config, *, namespace: str = "",
        env_vars: dict[str, str] | None = None, code_path: list[str] | None = None,
        on_log: Callable[[Any], None] | None = None, entrypoint: str = "",
    ) -> None:
        self.target = address  # tcp:HOST:PORT
        self.config = config
        self.identity = Identity.of(credential)
        self.credential = credential
        self.limits = Limits.of(config)
        self.namespace = namespace
        self.env_vars: dict[str, str] = dict(env_vars or {})
        self.code_path: list[str] = list(code_path or [])
        self.on_log = on_log
        self.entrypoint = entrypoint
        self.worker_id = new_worker_id()
        self.lock = threading.RLock()
        self.refs = _Table()
        self.ids = TaskIds()
        self.metrics = MetricsRegistry()
        self.packages: dict[str, dict[str, str]] = {}
        self.io = IOThread()
        self.run = self.io.run
        self.conn: Connection | None = None
        self.info: cm.ClientSession | None = None
        self.closing = False
        self.control_lost = ""
        self._released: list[bytes] = []
        self._flush_posted = False
        self._connected: asyncio.Event | None = None
        self._functions: dict[bytes, Any] = {}
        self._exported: set[bytes] = set()
        self._keep = threading.local()  # refs made for arguments, alive until their call is sent
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="manta-client-get")
        self._uploads = iter(range(1, 1 << 62))

    # -- who and where ----------------------------------------------------------

    @property
    def session(self) -> m.SessionInfo:
        info = self.info
        return m.SessionInfo(session_dir=info.session_name if info else "", head_address=self.target,
                             agent_address="", credential=self.credential)

    @property
    def node_id(self) -> bytes:
        return self.info.node_id if self.info else b""

    @property
    def address(self) -> str:
        return self.info.address if self.info else ""

    @property
    def driver_address(self) -> str:
        return self.address

    @property
    def job_id(self) -> int:
        return self.info.job_id if self.info else 0

    @property
    def chunk(self) -> int:
        return self.info.chunk_bytes if self.info else 1 << 20

    # -- the connection -------------------------------------------------------------

    def start(self, resume: bytes = b"") -> None:
        """Opens a session (or resumes the one named `resume`, if it is this principal's)."""
        self.io.start()
        try:
            self.run(self._start(resume))
        except RemoteError as e:
            raise error_from_remote(e) from None

    async def _start(self, resume: bytes) -> None:
        self._connected = asyncio.Event()
        await self._open(resume)

    def _tls(self) -> tuple[ssl.SSLContext | None, str]:
        """The TLS context for the head (None: plain TCP), and the CA hash to pin."""
        host = self.target.split(":")[1]
        ca_file = os.environ.get("MANTA_TLS_CA", "")
        ca_hash = os.environ.get("MANTA_CA_HASH", "").strip().lower()
        if not (ca_file or ca_hash or tls_wanted(self.config.tls, [host])):
            return None, ""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if ca_file:
            ctx.load_verify_locations(ca_file)  # checks the head's certificate and the cluster's name
            return ctx, ca_hash
        # No CA file: encrypt, then check the head's certificate against the CA
        # it sends, whose fingerprint must be the one pinned.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if not ca_hash:
            log.warning("manta: TLS to %s without a pinned CA: set MANTA_CA_HASH to the fingerprint "
                        "`manta start --head` printed (or MANTA_TLS_CA to its ca.pem)", self.target)
        return ctx, ca_hash

    async def _open(self, resume: bytes) -> None:
        tls, ca_hash = self._tls()
        conn = await connect(
            self.target, self.identity, self._handle, name="head", on_close=self._lost, expect=Role.CLUSTER,
            limits=self.limits, tls=tls,
        )
        try:
            reply: cm.ClientSession = await conn.request(cm.ClientConnect(
                resume=resume, namespace=self.namespace, entrypoint=self.entrypoint, version=VERSION,
            ))
            if ca_hash:
                fp = tls_contexts.fingerprint(reply.ca) if reply.ca else "(none)"
                if fp != ca_hash:
                    raise exc.AuthenticationError(
                        f"the head at {self.target} has the CA {fp}, not the pinned {ca_hash} (MANTA_CA_HASH)")
                try:
                    pki.verify_chain(reply.ca, tls_contexts.peer_certificate(conn.transport))
                except tls_contexts.TlsError as e:
                    raise exc.AuthenticationError(f"the head at {self.target}: {e}") from None
        except BaseException:
            conn.close()
            raise
        self.info = reply
        self.namespace = reply.namespace
        self.conn = conn
        assert self._connected is not None
        self._connected.set()
        self._flush()

    def _handle(self, conn: Connection, msg: Any) -> None:
        if type(msg) is cm.ClientLog and self.on_log is not None:
            self.on_log(msg)

    def _lost(self, conn: Connection) -> None:
        if self.closing or conn is not self.conn:
            return
        self.conn = None
        assert self._connected is not None
        self._connected.clear()
        log.warning("manta: lost the connection to %s; reconnecting", self.target)
        self.io.loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        assert self.info is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.client_reconnect_s
        why = "the grace period passed"
        while not self.closing and loop.time() < deadline:
            try:
                await self._open(self.info.session_id)
                log.warning("manta: reconnected to %s; the session goes on", self.target)
                return
            except RemoteError as e:
                why = e.message
                break  # the head answered: the session is gone
            except (OSError, ConnectionLost, TimeoutError) as e:
                why = str(e)
                await asyncio.sleep(0.5)
        self.control_lost = f"the client session with {self.target} is lost ({why}); call manta.shutdown() " \
                            "and init() again"
        assert self._connected is not None
        self._connected.set()  # wakes the waiting calls, to raise

    async def _request(self, body: bytes | Parts) -> memoryview:
        assert self._connected is not None
        await self._connected.wait()
        conn = self.conn
        if conn is None or self.control_lost:
            raise ConnectionLost(self.control_lost or "not connected")
        if isinstance(body, list):  # a value's chunk, sent from its own buffer as it is
            reply = await conn.request_split(cm.ClientCall(body=c.EMPTY), "body", body)
        else:
            reply = await conn.request(cm.ClientCall(body=memoryview(body)))
        return reply.body  # type: ignore[no-any-return]

    def call(self, call: Any, timeout: float | None = None) -> Any:
        """Asks the proxy (any thread but the I/O thread); raises what the proxy raised."""
        body = c.encode(call)
        for attempt in range(2):
            try:
                answer = c.decode(self.run(self._request(body), timeout))
                break
            except RemoteError as e:
                raise error_from_remote(e) from None
            except ConnectionLost as e:
                if self.control_lost or attempt or not isinstance(call, IDEMPOTENT):
                    raise exc.RaySystemError(self.control_lost or f"the connection to the head dropped: {e}") \
                        from None
        if type(answer) is c.Failed:
            raise pickle.loads(answer.error)
        return answer

    async def _gather(self, calls: list[Any], each: Callable[[int, Any], None] | None) -> list[Any]:
        sem = asyncio.Semaphore(WINDOW)

        async def one(i: int, call: Any) -> Any:
            async with sem:
                answer = c.decode(await self._request(c.encode_parts(call)))
                if each is None or type(answer) is c.Failed:
                    return answer
                each(i, answer)  # at once: the frame it is a view of is let go for the next
                return None

        return await asyncio.gather(*(one(i, x) for i, x in enumerate(calls)))

    def call_many(self, calls: list[Any], each: Callable[[int, Any], None] | None = None) -> list[Any]:
        """Several calls at once, a window of them in flight (a large value's
        chunks). `each(i, answer)`, given, takes each answer as it comes, on
        the I/O thread; then the answers are not kept."""
        try:
            answers = self.run(self._gather(calls, each))
        except RemoteError as e:
            raise error_from_remote(e) from None
        except ConnectionLost as e:
            raise exc.RaySystemError(self.control_lost or f"the connection to the head dropped: {e}") from None
        for a in answers:
            if type(a) is c.Failed:
                raise pickle.loads(a.error)
        return answers

    def call_head(self, msg: Any, timeout: float | None = None) -> Any:
        return m.decode(self.call(c.Forward(msg=m.encode(msg)), timeout).msg)

    def call_agent(self, msg: Any) -> Any:
        return m.decode(self.call(c.Forward(msg=m.encode(msg), to_agent=True)).msg)

    def shutdown(self) -> None:
        if self.closing:
            return
        if self.conn is not None and not self.control_lost:
            try:
                self.call(c.End(), timeout=5)  # the job ends now, not after the grace period
            except Exception:
                pass
        self.closing = True
        conn = self.conn
        if conn is not None:
            self.io.post(conn.close)
        self.io.stop()
        self._pool.shutdown(wait=False)
        self.refs.entries.clear()

    # -- refs ---------------------------------------------------------------------

    def _ref(self, info: c.RefInfo) -> ObjectRef:
        with self.lock:
            e = self.refs.entries.get(info.object_id)
            if e is None:
                self.refs.entries[info.object_id] = _Entry(info.owner, info.cap)
            else:
                e.local += 1
        return ObjectRef(info.object_id, info.owner, self)

    def ref_deleted(self, object_id: bytes) -> None:
        if self.closing:
            return
        with self.lock:
            e = self.refs.entries.get(object_id)
            if e is None:
                return
            e.local -= 1
            if e.local > 0:
                return
            del self.refs.entries[object_id]
            self._released.append(object_id)
            if self._flush_posted:
                return
            self._flush_posted = True
        self.io.post(self._flush)

    def _flush(self) -> None:
        """I/O thread: tells the proxy which refs the client let go of."""
        with self.lock:
            self._flush_posted = False
            if not self._released or self.conn is None:
                return
            gone, self._released = self._released, []
        self.conn.request_cb(cm.ClientCall(body=memoryview(c.encode(c.Release(ids=gone)))), lambda _: None)

    def ref_escaped(self, object_id: bytes) -> None:
        pass  # the proxy holds it as long as any ref here lives

    def deserialized_ref(self, object_id: bytes, owner: str, cap: bytes = b"") -> ObjectRef:
        """A ref inside a value read here, not yet held: the proxy borrows it for us."""
        with self.lock:
            e = self.refs.entries.get(object_id)
            if e is not None:
                e.local += 1
                return ObjectRef(object_id, owner, self)
            if object_id in self._released:  # released but not yet said: say nothing
                self._released.remove(object_id)
                self.refs.entries[object_id] = _Entry(owner, cap)
                return ObjectRef(object_id, owner, self)
        self.call(c.Borrow(ref=c.RefInfo(object_id, owner, cap)))
        return self._ref(c.RefInfo(object_id, owner, cap))

    def ref_cap(self, object_id: bytes, owner: str) -> bytes:
        e = self.refs.entries.get(object_id)
        return e.cap if e is not None else b""

    def future_for(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        return self._pool.submit(self.get, ref)

    async def await_ref(self, ref: ObjectRef) -> Any:
        return await asyncio.wrap_future(self.future_for(ref))

    # -- objects --------------------------------------------------------------------

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise put_of_a_ref()
        return self._upload(serialize_checked(value, f"the object passed to put() ({type(value).__name__})"))

    def _upload(self, sv: Any) -> ObjectRef:
        total = sv.size
        contained = [r._id for r in sv.contained]
        upload = next(self._uploads)
        chunk = self.chunk
        if total <= chunk:
            end = c.PutEnd(upload=upload, total=total, data=memoryview(sv.to_bytes()), contained=contained)
        else:
            # Each chunk straight from the value's own buffers (`piece`): the
            # whole is never laid out here (two copies of it, before).
            self.call_many([
                c.PutChunk(upload=upload, offset=off, total=total, data=sv.piece(off, off + chunk))
                for off in range(0, total, chunk)
            ])
            end = c.PutEnd(upload=upload, total=total, data=memoryview(b""), contained=contained)
        del sv
        return self._ref(self.call(end).refs[0])

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        single = isinstance(refs, ObjectRef)
        if single:
            lst = [refs]
        elif isinstance(refs, (list, tuple)):
            lst = list(refs)
            bad = next((r for r in lst if type(r) is not ObjectRef), None)
            if bad is not None:
                raise TypeError(f"get() expected an ObjectRef or a list of ObjectRefs, got a list containing "
                                f"{type(bad).__name__}")
        else:
            raise get_of_a_non_ref(refs)
        if timeout is not None and timeout < 0:
            raise negative_timeout()
        if not lst:
            return []
        fetched = self.call(c.Get(ids=[r._id for r in lst], timeout=timeout)).items
        values = []
        for item in fetched:
            value, is_error = deserialize(self._whole(item))
            if is_error:
                raise as_raised(value)
            values.append(value)
        return values[0] if single else values

    def _whole(self, item: c.Item) -> bytes | memoryview:
        if not item.download:
            return item.data
        buf = bytearray(item.size)
        buf[: len(item.data)] = item.data
        offsets = list(range(len(item.data), item.size, self.chunk))

        def into(i: int, answer: c.Data) -> None:
            buf[offsets[i]: offsets[i] + len(answer.data)] = answer.data

        self.call_many([c.Chunk(item.download, off, self.chunk) for off in offsets], into)
        return memoryview(buf)

    def wait(
        self, refs: list[ObjectRef], num_returns: int = 1, timeout: float | None = None, fetch_local: bool = True,
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        if isinstance(refs, ObjectRef) or not isinstance(refs, (list, tuple)):
            raise wait_of_a_non_list(refs)
        refs = list(refs)
        if len({r._id for r in refs}) != len(refs):
            raise wait_of_duplicates()
        if num_returns <= 0 or num_returns > len(refs):
            raise wait_num_returns(num_returns, len(refs))
        if timeout is not None and timeout < 0:
            raise negative_timeout()
        ready_ids = set(self.call(c.Wait(ids=[r._id for r in refs], num_returns=num_returns, timeout=timeout,
                                         fetch_local=fetch_local)).ids)
        ready = [r for r in refs if r._id in ready_ids][:num_returns]
        chosen = {r._id for r in ready}
        return ready, [r for r in refs if r._id not in chosen]

    def error_of(self, ref: ObjectRef, timeout: float | None) -> BaseException | None:
        try:
            self.get(ref, timeout)
        except exc.GetTimeoutError:
            raise
        except BaseException as e:  # noqa: BLE001 - what get would raise
            return e
        return None

    def placement_group_ready(self, pg: Any) -> ObjectRef:
        value = serialize_checked(pg, "the placement group").to_bytes()
        return self._ref(self.call(c.PgReady(pg_id=pg.id.binary(), value=value)).refs[0])

    # -- functions ------------------------------------------------------------------

    def export_function(self, fn_id: bytes, blob: bytes, original: Any = None) -> None:
        if fn_id not in self._exported:
            self.call_head(m.PutFunction(fn_id=fn_id, blob=blob))
            self._exported.add(fn_id)

    def load_function(self, fn_id: bytes) -> Any:
        fn = self._functions.get(fn_id)
        if fn is None:
            fn = self._functions[fn_id] = load_function(fn_id, self.call_head(m.GetFunction(fn_id=fn_id)).blob)
        return fn

    def package_env(self, runtime_env: dict[str, Any]) -> dict[str, str]:
        """working_dir and py_modules are packed here and stored in the cluster through the proxy."""
        return package_env(self, runtime_env)  # type: ignore[arg-type]

    # -- tasks ----------------------------------------------------------------------

    def prepare_args(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], name: str
    ) -> tuple[list[m.Arg], list[str], list[bytes]]:
        """As the core runtime's (`Submitter.prepare_args`), serialized here: a
        large argument is uploaded first and passed by ref."""
        out: list[m.Arg] = []
        pinned: list[bytes] = []
        inlined, budget = 0, inline_budget(self.config.max_frame_bytes)
        keep = self._kept()
        values = list(args) + list(kwargs.values())
        for i, value in enumerate(values):
            if isinstance(value, ObjectRef):
                keep.append(value)
                pinned.append(value._id)
                out.append(m.Arg(object_id=value._id, owner=value._owner, cap=self.ref_cap(value._id, value._owner)))
                continue
            label = f"argument {i}" if i < len(args) else f"keyword argument {list(kwargs)[i - len(args)]!r}"
            sv = serialize_checked(value, f"{label} of {name}() ({type(value).__name__})")
            keep.extend(sv.contained)
            pinned.extend(r._id for r in sv.contained)
            if not inline(sv.size, inlined, budget):
                ref = self._upload(sv)
                keep.append(ref)
                pinned.append(ref._id)
                # The head's proxy keeps a small value in its memory, not the store (as put does).
                stored = sv.size > INLINE_MAX
                out.append(m.Arg(object_id=ref._id, owner=ref._owner, in_store=stored,
                                 node_id=self.node_id if stored else b"", cap=self.ref_cap(ref._id, ref._owner)))
            else:
                inlined += sv.size
                out.append(m.Arg(data=sv.to_bytes()))
        return out, list(kwargs), pinned

    def _kept(self) -> list[ObjectRef]:
        keep: list[ObjectRef] | None = getattr(self._keep, "refs", None)
        if keep is None:
            keep = self._keep.refs = []
        return keep

    def _sent(self) -> None:
        self._keep.refs = []

    def submit_task(
        self, *, fn_id: bytes, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], num_returns: int,
        resources: dict[str, float], max_retries: int, retry_exceptions: bool | tuple[type, ...],
        env_vars: dict[str, str], placement: m.Placement | None = None, capture: tuple[bytes, int] = (b"", 0),
        backpressure: int = -1,
    ) -> list[ObjectRef]:
        spec_args, kwnames, pinned = self.prepare_args(args, kwargs, name)
        try:
            reply = self.call(c.Submit(
                fn_id=fn_id, name=name, args=spec_args, kwnames=kwnames, pinned=pinned, num_returns=num_returns,
                resources=resources, max_retries=max_retries, retry_exceptions=retry_exceptions is True,
                env_vars=env_vars, placement=placement, backpressure=backpressure, retry_on=_names(retry_exceptions),
            ))
        finally:
            self._sent()
        return [self._ref(r) for r in reply.refs]

    def generator(self, end: ObjectRef) -> ObjectRefGenerator:
        """A streaming task's items, each asked of the proxy, which keeps the task's own generator."""
        return ObjectRefGenerator(end, ClientItems(self), Stream(task_of(end._id), end._id, 0))

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        self.call(c.Cancel(object_id=ref._id, force=force, recursive=recursive))

    def story(self, task_id: bytes) -> list[StoryRecord]:
        """What happened to a task, as its submitter (the proxy) recorded it."""
        return [StoryRecord(*r) for r in self.call(c.Story(task_id=task_id)).records]

    # -- actors -----------------------------------------------------------------------

    def create_actor(self, spec: m.ActorSpec, pinned: list[bytes]) -> m.ActorRegistered:
        try:
            return m.decode(self.call(c.CreateActor(spec=spec, pinned=pinned)).msg)  # type: ignore[return-value]
        finally:
            self._sent()

    def hold_actor(self, actor_id: bytes) -> ObjectRef:
        return self._ref(self.call(c.HoldActor(actor_id=actor_id)).refs[0])

    def submit_actor_task(
        self, actor_id: bytes, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], num_returns: int,
        max_task_retries: int, name: str, retry_exceptions: bool | tuple[type, ...] = False,
        concurrency_group: str = "", backpressure: int = -1,
    ) -> list[ObjectRef]:
        spec_args, kwnames, pinned = self.prepare_args(args, kwargs, name)
        try:
            reply = self.call(c.ActorCall(
                actor_id=actor_id, method=method, args=spec_args, kwnames=kwnames, pinned=pinned,
                num_returns=num_returns, max_task_retries=max_task_retries, name=name,
                retry_exceptions=retry_exceptions is True, concurrency_group=concurrency_group,
                backpressure=backpressure, retry_on=_names(retry_exceptions),
            ))
        finally:
            self._sent()
        return [self._ref(r) for r in reply.refs]

    def kill_actor(self, actor_id: bytes, no_restart: bool) -> None:
        self.call_head(m.KillActor(actor_id=actor_id, no_restart=no_restart))

    def get_named_actor(self, name: str, namespace: str) -> m.ActorState:
        return self.call_head(m.GetNamedActor(name=name, namespace=namespace))  # type: ignore[no-any-return]


def _names(retry_exceptions: bool | tuple[type, ...]) -> list[str]:
    return [qualified_name(k) for k in retry_exceptions] if isinstance(retry_exceptions, tuple) else []


class ClientItems:
    """An ObjectRefGenerator's items through the client server (`generators.ItemSource`)."""

    def __init__(self, rt: ClientRuntime) -> None:
        self.rt = rt

    def next(self, stream: Stream, timeout: float | None) -> ObjectRef | None:
        refs = self.rt.call(c.GenNext(task_id=stream.task_id, timeout=timeout)).refs
        if not refs:
            stream.ended = True
            return None
        stream.items.append(refs[0].object_id)
        stream.taken += 1
        return self.rt._ref(refs[0])

    def ready(self, stream: Stream) -> bool:
        return bool(self.rt.call(c.GenReady(task_id=stream.task_id)).value)

    def close(self, stream: Stream) -> None:
        # From a generator's __del__: sent, not waited for.
        rt = self.rt
        if rt.closing or stream.ended:
            return
        body = memoryview(c.encode(c.GenClose(task_id=stream.task_id)))

        def send() -> None:
            if rt.conn is not None:
                rt.conn.request_cb(cm.ClientCall(body=body), lambda _: None)

        rt.io.post(send)


def client_address(address: str) -> str | None:
    """'manta://HOST:PORT' or 'ray://HOST:PORT' -> 'tcp:HOST:PORT'; None for other addresses."""
    for scheme in SCHEMES:
        if address.startswith(scheme):
            rest = address[len(scheme):].rstrip("/")
            host, sep, port = rest.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"bad client address {address!r}: expected {scheme}HOST:PORT")
            return f"tcp:{host.strip('[]')}:{port}"
    return None


def connect_client(runtime: ClientRuntime) -> None:
    try:
        runtime.start()
    except AuthRejected as e:
        runtime.shutdown()
        raise exc.AuthenticationError(str(e)) from None
    except BaseException:
        runtime.shutdown()
        raise
