"""The proxy driver: a real driver on the head's node, working for one remote client.

The head starts one per client session (`head/clients.py`). It registers a
job with the client's own token, so the cluster lets it do exactly what the
client may, and owns every object the client makes: the client's
ObjectRefs name objects held here (`held`), let go when the client says it
has no ref left (`Release`). It answers `client.calls` requests relayed by
the head. Values are bytes of `runtime.serialization` that only the client
makes and reads: stored and shipped as they are, never unpickled here.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from manta import exceptions as exc
from manta._private import ids
from manta._private.auth.credentials import Identity
from manta._private.client import calls as c
from manta._private.protocol import client_messages as cm
from manta._private.protocol import messages as m
from manta._private.protocol import state_messages as sm
from manta._private.protocol.identity import Credential, Role
from manta._private.runtime.core import CoreRuntime
from manta._private.runtime.generators import ObjectRefGenerator
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.submission import PreparedArgs, classes_named
from manta._private.transport.connection import Connection, connect

log = logging.getLogger(__name__)

# Answered in order, one at a time: what changes which refs are held (a
# Release must not pass the Borrow or the Submit sent after it).
SERIAL = (c.End, c.Release, c.Borrow, c.Submit, c.ActorCall, c.CreateActor, c.HoldActor, c.PutEnd, c.Cancel)
# What a client may ask the head through its proxy: what a driver's API asks.
# Not what only the runtime sends for itself (registration, task records,
# an actor's exit), nor the client server's own messages.
NOT_FORWARDED = (m.RegisterDriver, m.TaskEvents, m.ActorExiting, m.ReleaseActor, cm.ClientConnect, cm.ClientCall,
                 cm.ProxyAttach, cm.ClientLog)
AGENT_FORWARDED = (m.GetResources, sm.ListWorkers, sm.ListObjects, sm.ListRuntimeEnvs)


class RawValue:
    """A value as the client serialized it, stored like a SerializedValue."""

    __slots__ = ("data", "contained", "size")

    def __init__(self, data: bytearray | bytes, contained: list[ObjectRef]) -> None:
        self.data = data
        self.contained = contained
        self.size = len(data)

    def to_bytes(self) -> bytes:
        return bytes(self.data)

    def write_into(self, dest: memoryview) -> None:
        dest[: self.size] = self.data


class Upload:
    """A large value a client is sending in chunks, written into the store as they come."""

    __slots__ = ("total", "object_id", "offset", "received", "lock")

    def __init__(self, total: int) -> None:
        self.total = total
        self.object_id = b""  # made in the store when the first chunk comes
        self.offset = 0
        self.received = 0
        self.lock = threading.Lock()


class Proxy:
    def __init__(self, rt: CoreRuntime, chunk_bytes: int) -> None:
        self.rt = rt
        self.chunk = chunk_bytes
        self.held: dict[bytes, ObjectRef] = {}
        self.uploads: dict[int, Upload] = {}
        self.downloads: dict[int, tuple[bytes | memoryview, int]] = {}
        self._download_ids = iter(range(1, 1 << 62))
        self.lock = threading.Lock()
        self.serial = ThreadPoolExecutor(1, thread_name_prefix="client-serial")
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="client-call")
        # A generator's next item may be long in coming: its waits do not hold the pool.
        self.waits = ThreadPoolExecutor(64, thread_name_prefix="client-wait")
        self.generators: dict[bytes, ObjectRefGenerator] = {}  # streaming tasks the client submitted
        self.conn: Connection | None = None
        self.gone = threading.Event()

    # -- the head ---------------------------------------------------------------

    async def attach(self, token: str, key: bytes) -> None:
        rt = self.rt
        self.conn = await connect(
            rt.session.head_address, Identity.of(Credential(token=token)), self.handle, name="head (client relay)",
            on_close=lambda _: self.gone.set(), expect=Role.CLUSTER, limits=rt.limits,
        )
        await self.conn.request(cm.ProxyAttach(
            key=key, job_id=rt.job_id, namespace=rt.namespace, node_id=rt.node_id, address=rt.address,
        ))

    def log_lines(self, msg: m.LogLines) -> None:
        conn = self.conn
        if conn is not None:
            conn.send_threadsafe(cm.ClientLog(prefix=msg.prefix, is_err=msg.is_err, text=msg.text))

    def handle(self, conn: Connection, msg: Any) -> None:
        if type(msg) is not cm.ClientCall:
            return
        try:
            call = c.decode(msg.body)  # its bytes: views into the frame, until written to the store
        except c.DecodeError as e:
            conn.reply_error(msg, m.ErrorKind.VALUE, f"malformed client call: {e}")
            return
        pool = self.serial if isinstance(call, SERIAL) else self.waits if type(call) is c.GenNext else self.pool
        pool.submit(self._answer, conn, msg, call)

    def _answer(self, conn: Connection, msg: cm.ClientCall, call: Any) -> None:
        try:
            reply = self.dispatch(call)
        except BaseException as e:  # noqa: BLE001 - the client raises it
            try:
                blob = pickle.dumps(e)
            except Exception:
                blob = pickle.dumps(RuntimeError(f"{type(e).__name__}: {e}"))
            reply = c.Failed(error=blob)
        body = c.encode_parts(reply)
        if isinstance(body, list):  # a large chunk of a value, sent from the store as it is
            conn.reply_split_threadsafe(msg, cm.ClientReply(body=c.EMPTY), "body", body)
        else:
            conn.reply_threadsafe(msg, cm.ClientReply(body=memoryview(body)))
        if type(call) is c.End:
            threading.Timer(0.2, self.gone.set).start()  # once the answer is out

    # -- the calls ----------------------------------------------------------------

    def dispatch(self, call: Any) -> Any:
        rt = self.rt
        t = type(call)
        if t is c.Get:
            return self._get(call)
        if t is c.Chunk:
            return self._chunk(call)
        if t is c.PutChunk:
            return self._put_chunk(call)
        if t is c.PutEnd:
            return self._put_end(call)
        if t is c.Release:
            with self.lock:
                for oid in call.ids:
                    self.held.pop(oid, None)
            return c.Done()
        if t is c.Borrow:
            r = call.ref
            if r.object_id not in self.held:
                ref = rt.deserialized_ref(r.object_id, r.owner, r.cap)
                rt.references.register_borrows()
                with self.lock:
                    self.held[r.object_id] = ref
            return c.Done()
        if t is c.Wait:
            refs = self._refs(call.ids)
            ready, _ = rt.wait(refs, call.num_returns, call.timeout, call.fetch_local)
            return c.Ready(ids=[r._id for r in ready])
        if t is c.Submit:
            refs = rt.submit_task(
                fn_id=call.fn_id, name=call.name, args=self._prepared(call), kwargs={}, num_returns=call.num_returns,
                resources=call.resources, max_retries=call.max_retries, retry_exceptions=self._retry_on(call),
                env_vars=call.env_vars, placement=call.placement, backpressure=call.backpressure,
            )
            return self._hold(self._streaming(refs, call.num_returns))
        if t is c.ActorCall:
            refs = rt.submit_actor_task(
                call.actor_id, call.method, self._prepared(call), {}, call.num_returns, call.max_task_retries,
                call.name, self._retry_on(call), call.concurrency_group, call.backpressure,
            )
            return self._hold(self._streaming(refs, call.num_returns))
        if t is c.GenNext:
            item = self._stream(call.task_id).next_within(call.timeout)
            return self._hold([item] if item is not None else [])
        if t is c.GenReady:
            return c.Flag(value=self._stream(call.task_id).next_ready())
        if t is c.GenClose:
            with self.lock:
                self.generators.pop(call.task_id, None)  # its items not taken go with it
            return c.Done()
        if t is c.PgReady:
            return self._hold([rt.objects.ready_when_placed(call.pg_id, call.value)])
        if t is c.Story:
            return c.Records(records=[(r.task_id, str(r.step), r.stimulus_id, r.time, r.detail)
                                      for r in rt.story(call.task_id)])
        if t is c.CreateActor:
            return c.Answer(msg=m.encode(self._create_actor(call)))
        if t is c.HoldActor:
            return self._hold([rt.hold_actor(call.actor_id)])
        if t is c.Cancel:
            rt.cancel(self._refs([call.object_id])[0], call.force, call.recursive)
            return c.Done()
        if t is c.Forward:
            return self._forward(call)
        if t is c.End:
            return c.Done()
        raise ValueError(f"a client cannot ask {t.__name__}")

    @staticmethod
    def _retry_on(call: c.Submit | c.ActorCall) -> bool | tuple[type, ...]:
        return classes_named(call.retry_on) if call.retry_on else call.retry_exceptions

    def _streaming(self, refs: list[ObjectRef], num_returns: int) -> list[ObjectRef]:
        """A streaming task's generator is kept here; the client asks it for each item (GenNext)."""
        if num_returns == m.STREAMING:
            with self.lock:
                self.generators[ids.task_of(refs[0]._id)] = self.rt.generator(refs[0])
        return refs

    def _stream(self, task_id: bytes) -> ObjectRefGenerator:
        with self.lock:
            gen = self.generators.get(task_id)
        if gen is None:
            raise ValueError(f"no generator of task {task_id.hex()} here (it was closed, or never submitted)")
        return gen

    def _refs(self, object_ids: list[bytes]) -> list[ObjectRef]:
        with self.lock:
            try:
                return [self.held[oid] for oid in object_ids]
            except KeyError as e:
                raise exc.ReferenceCountingAssertionError(
                    e.args[0].hex(), self.rt.address, "the client released it, or never had it") from None

    def _hold(self, refs: list[ObjectRef]) -> c.Refs:
        rt = self.rt
        with self.lock:
            for r in refs:
                self.held[r._id] = r
        return c.Refs(refs=[c.RefInfo(r._id, r._owner, rt.ref_cap(r._id, r._owner)) for r in refs])

    def _prepared(self, call: c.Submit | c.ActorCall) -> Any:
        pins = [(r._id, r._owner) for r in self._refs(call.pinned)]
        return PreparedArgs.of(call.args, call.kwnames, pins)

    def _create_actor(self, call: c.CreateActor) -> m.ActorRegistered:
        """The client built the spec; the job's fields are the proxy's, who creates it."""
        from msgspec.structs import replace

        rt = self.rt
        spec = call.spec
        creation = replace(spec.creation, job_id=rt.job_id, owner=rt.address, driver=rt.driver_address)
        spec = replace(spec, job_id=rt.job_id, creation=creation, owner_worker=b"")
        pins = [(r._id, r._owner) for r in self._refs(call.pinned)]
        with rt.lock:
            for oid, owner in pins:
                rt.refs.pin(oid, owner)
        return rt.create_actor(spec, [oid for oid, _ in pins])

    def _forward(self, call: c.Forward) -> c.Answer:
        msg = m.decode(call.msg)
        if call.to_agent:
            if not isinstance(msg, AGENT_FORWARDED):
                raise exc.AuthorizationError(f"a client cannot send {type(msg).__name__} to a node agent")
            return c.Answer(msg=m.encode(self.rt.call_agent(msg)))
        if isinstance(msg, NOT_FORWARDED):
            raise exc.AuthorizationError(f"a client cannot send {type(msg).__name__} to the head")
        return c.Answer(msg=m.encode(self.rt.call_head(msg)))

    # -- values ---------------------------------------------------------------------

    def _put_chunk(self, call: c.PutChunk) -> c.Done:
        """A chunk of a large value goes straight into its place in the store
        (made when the first chunk comes), as chunks arrive in any order."""
        rt = self.rt
        if not 0 < call.total <= rt.store_capacity:
            raise ValueError(f"a value of {call.total} bytes does not fit this node's object store")
        with self.lock:
            up = self.uploads.get(call.upload)
            if up is None:
                up = self.uploads[call.upload] = Upload(call.total)
        if up.total != call.total or call.offset < 0 or call.offset + len(call.data) > call.total:
            raise ValueError("a chunk outside the value being uploaded")
        with up.lock:
            if not up.object_id:
                oid = ids.object_id(rt.ids.next(), 0)
                up.offset = rt.call_agent(m.StoreCreate(object_id=oid, size=call.total)).offset
                up.object_id = oid
            up.received += len(call.data)
        assert rt.region is not None
        if call.data:
            with rt.region.writing(up.offset + call.offset, len(call.data)) as dest:
                dest[:] = call.data
        return c.Done()

    def _put_end(self, call: c.PutEnd) -> c.Refs:
        rt = self.rt
        with self.lock:
            up = self.uploads.pop(call.upload, None)
        contained = self._refs(call.contained)
        if up is None:  # small: all of it in this call
            if len(call.data) != call.total:
                raise ValueError(f"the value uploaded has {len(call.data)} bytes, not {call.total}")
            oid = ids.object_id(rt.ids.next(), 0)
            rt.objects.store_owned(oid, RawValue(call.data, contained), local=1)  # type: ignore[arg-type]
            return self._hold([ObjectRef(oid, rt.address, rt)])
        with up.lock:
            oid = up.object_id
        if not oid:
            raise ValueError("an upload ended before any of it came")
        if up.received != call.total or up.total != call.total:
            rt.post(rt.send_agent, m.StoreFree(object_ids=[oid]))
            raise ValueError(f"the value uploaded has {up.received} bytes, not {call.total}")
        rt.post(rt.send_agent, m.StoreSeal(object_id=oid))
        rt.objects.owned_in_store(oid, [(r._id, r._owner) for r in contained], local=1)
        return self._hold([ObjectRef(oid, rt.address, rt)])

    def _get(self, call: c.Get) -> c.Fetched:
        rt = self.rt
        refs = self._refs(call.ids)
        if call.timeout is not None and call.timeout < 0:
            raise ValueError("'timeout' must be a non-negative number or None")
        flags = rt.objects.wait_ready(refs, len(refs), call.timeout, fail_fast=True)
        if not all(flags):
            failed = [r for r, ok in zip(refs, flags) if ok]
            if not failed:
                raise exc.GetTimeoutError(f"Get timed out: {flags.count(False)} of {len(refs)} objects not ready "
                                          f"after {call.timeout} s")
            refs = failed[:1]  # its error, as Ray raises the first failure without waiting for the rest
        items = []
        budget = self.chunk
        for ref in refs:
            raw = self._raw(ref)
            size = len(raw)
            if size <= budget:
                items.append(c.Item(data=memoryview(raw), size=size))
                budget -= size
                continue
            # All of it by Chunk calls, each sent from the store as it is (not
            # a first part copied into this answer): the client asks for them
            # a window at a time.
            with self.lock:
                download = next(self._download_ids)
                self.downloads[download] = (raw, size)  # the bytes still to be read
            items.append(c.Item(data=c.EMPTY, size=size, download=download))
        return c.Fetched(items=items)

    def _raw(self, ref: ObjectRef) -> bytes | memoryview:
        """The object's serialized bytes: from the owner's memory, or pinned in this node's store."""
        rt = self.rt
        with rt.lock:
            e = rt.refs.get(ref._id)
            if e is None:
                raise exc.ReferenceCountingAssertionError(ref.hex(), ref._owner)
            data, in_store, node_id = e.data, e.in_store, e.node_id
        if not in_store:
            assert data is not None
            return data
        if node_id and node_id != rt.node_id:
            msg: Any = m.StorePull(object_id=ref._id, source=rt.objects._agent_address_of(node_id))
        else:
            msg = m.StorePin(object_id=ref._id)
        reply = rt.call_agent(msg)
        return rt.objects.pinned_view(ref._id, reply.offset, reply.size)

    def _chunk(self, call: c.Chunk) -> c.Data:
        with self.lock:
            found = self.downloads.get(call.download)
            if found is None:
                raise ValueError(f"no download {call.download}")
            raw, left = found
            size = max(0, min(call.size, self.chunk, len(raw) - call.offset))
            left -= size
            if left <= 0:
                del self.downloads[call.download]  # all of it was read: the store's pin goes with it
            else:
                self.downloads[call.download] = (raw, left)
        view = memoryview(raw)[call.offset: call.offset + size]
        return c.Data(data=view)


def describe_job(rt: CoreRuntime, entrypoint: str) -> None:
    rt.post(rt.send_head, sm.JobDetails(
        job_id=rt.job_id, entrypoint=entrypoint or "(remote client)", runtime_env="{}", node_id=rt.node_id,
        ip=rt.session.node_ip or "127.0.0.1",
    ))


def exit_when_gone(proxy: Proxy) -> None:
    """Blocks until the head lets go of this proxy (its session ended), then ends the job."""
    proxy.gone.wait()
    log.info("the client session ended: shutting the proxy down")
    try:
        proxy.rt.shutdown()
    finally:
        os._exit(0)
