"""Quotas decided without processes: what passes a limit, and the KV ledger's charges."""

from manta._private.auth.quotas import Ledger, Use, over, pending_limit
from manta._private.node.quotas import NodeQuotas
from manta._private.objectstore.store import StoreTable
from manta._private.protocol.auth_messages import Quota
from manta._private.protocol.identity import Kind, Principal, Role


def test_a_request_that_would_pass_a_limit_is_refused_naming_it():
    q = Quota(max_actors=2, max_cpus=4, max_kv_bytes=100)
    assert over(q, Use(actors=1), Use(actors=1), "job 3") == ""
    why = over(q, Use(actors=2), Use(actors=1), "job 3")
    assert "job 3" in why and "max_actors=2" in why and "holds 2 live actors" in why
    assert "max_cpus=4" in over(q, Use(cpus=3.5), Use(cpus=1), "token t")
    assert over(q, Use(cpus=3.5), Use(cpus=0.5), "token t") == ""
    assert "max_kv_bytes=100" in over(q, Use(kv_bytes=90), Use(kv_bytes=11), "job 1")


def test_no_limit_and_shrinking_requests_always_pass():
    assert over(Quota(), Use(actors=10**6, cpus=1e9, kv_bytes=10**12), Use(actors=1, cpus=8, kv_bytes=1), "j") == ""
    # Already over (say the quota was lowered): what holds no more still passes.
    assert over(Quota(max_kv_bytes=10), Use(kv_bytes=50), Use(kv_bytes=-5), "j") == ""
    assert over(Quota(max_actors=0), Use(), Use(cpus=1), "j") == ""


def test_the_kv_ledger_moves_a_keys_bytes_to_its_last_writer_and_frees_them_on_delete():
    book = Ledger()
    book.put(("ns", b"k"), 1, "tokA", 40)
    book.put(("ns", b"j"), 1, "tokA", 10)
    assert book.by_job == {1: 50} and book.by_token == {"tokA": 50}
    assert book.held(("ns", b"k"), 1, "tokA") == (40, 40)
    assert book.held(("ns", b"k"), 2, "tokB") == (0, 0)
    book.put(("ns", b"k"), 2, "", 30)  # another job, with no token, overwrites
    assert book.by_job == {1: 10, 2: 30} and book.by_token == {"tokA": 10}
    book.delete(("ns", b"k"))
    book.delete(("ns", b"missing"))
    assert book.by_job == {1: 10} and book.writer.keys() == {("ns", b"j")}
    book.delete(("ns", b"j"))
    assert book.by_job == {} and book.by_token == {}


def test_pending_and_store_limits_name_what_they_bound():
    q = Quota(max_pending_tasks=3, max_store_bytes=1000)
    assert over(q, Use(pending_tasks=2), Use(pending_tasks=1), "job 1") == ""
    assert "max_pending_tasks=3" in over(q, Use(pending_tasks=3), Use(pending_tasks=1), "job 1")
    why = over(q, Use(store_bytes=900), Use(store_bytes=101), "token t")
    assert "max_store_bytes=1000" in why and "object store" in why
    assert q.limits() and not Quota().limits()


def _job(job_id=7, token="", quota=None, token_quota=None):
    return Principal(kind=Kind.JOB, role=Role.SUBMIT, name=f"job {job_id}", job_id=job_id, token_id=token,
                     quota=quota, token_quota=token_quota)


def test_a_process_may_have_the_lower_of_its_jobs_and_its_tokens_pending_tasks():
    assert pending_limit(None) is None
    assert pending_limit(_job()) is None
    assert pending_limit(_job(quota=Quota(max_actors=3))) is None
    assert pending_limit(_job(quota=Quota(max_pending_tasks=9), token_quota=Quota(max_pending_tasks=4))) == 4
    assert pending_limit(_job(token_quota=Quota(max_pending_tasks=4, max_kv_bytes=1))) == 4


def test_store_bytes_are_charged_to_the_creator_until_the_object_leaves_the_node():
    nq = NodeQuotas()
    store = StoreTable(10_000)
    store.on_gone = nq.gone
    a = _job(1, "tokA", quota=Quota(max_store_bytes=500), token_quota=Quota(max_store_bytes=800))
    b = _job(2, "tokA", token_quota=Quota(max_store_bytes=800))
    free = _job(3)  # no quota: nothing is counted for it

    def create(p, oid, size):
        why = nq.store_refusal(p, size)
        if not why:
            store.create(oid, size, p.job_id)
            nq.created(p, oid, size)
        return why

    assert create(a, b"a1", 400) == ""
    assert "job 1" in create(a, b"a2", 200) and "max_store_bytes=500" in create(a, b"a2", 200)
    assert create(b, b"b1", 350) == ""
    assert "token tokA" in create(b, b"b2", 100), "the token's jobs together: 400 + 350 + 100 > 800"
    assert create(free, b"f1", 5000) == "" and nq.store.by_job == {1: 400, 2: 350}
    # Spilled to disk, it still counts; freed there, it is released.
    store.seal(b"a1")
    store.spilled_out(b"a1")
    assert create(a, b"a2", 200) != ""
    store.free(b"a1")
    assert create(a, b"a2", 200) == ""
    # Freed while a reader pins it: released only once the reader lets go.
    store.seal(b"b1")
    store.pin(b"b1", "reader", lambda o: None)
    store.free(b"b1")
    assert nq.store.by_token["tokA"] == 550
    store.unpin(b"b1", "reader")
    assert nq.store.by_token == {"tokA": 200} and nq.store.by_job == {1: 200}
    # A creator that dies before sealing: its object is dropped, and its bytes with it.
    store.client_gone(1)
    assert nq.store.by_job == {}


def test_queued_lease_requests_are_bounded_per_job_and_token_and_forgotten_once_served():
    nq = NodeQuotas()
    a = _job(1, "tokA", quota=Quota(max_pending_tasks=2), token_quota=Quota(max_pending_tasks=3))
    b = _job(2, "tokA", token_quota=Quota(max_pending_tasks=3))
    queued: dict[int, object] = {}
    parked: list[Principal] = []  # waiting for a node that can serve them at all

    def ask(p, rid):
        why = nq.lease_refusal(p, queued, parked)
        if not why:
            queued[rid] = p
            nq.lease_queued(p, rid)
        return why

    assert ask(a, 1) == "" and ask(a, 2) == ""
    assert "job 1" in ask(a, 3) and "max_pending_tasks=2" in ask(a, 3)
    assert ask(b, 4) == ""
    assert "token tokA" in ask(b, 5)
    del queued[1]  # granted
    assert ask(b, 5) == "" and "token tokA" in ask(a, 6)
    queued.clear()
    assert ask(a, 7) == "" and nq.queued_by_job == {1: {7}} and nq.queued_by_token == {"tokA": {7}}
    assert ask(_job(3), 8) == "" and 3 not in nq.queued_by_job, "a job without a limit is not counted"
    parked.append(a)
    assert "job 1" in ask(a, 9), "one queued and one parked make its quota of 2"
