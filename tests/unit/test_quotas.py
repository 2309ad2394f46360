"""Quotas decided without processes: what passes a limit, and the KV ledger's charges."""

from manta._private.control.quotas import KvLedger, Use, over
from manta._private.protocol.auth_messages import Quota


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
    book = KvLedger()
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
