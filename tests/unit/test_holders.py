"""The owner's decisions on who may read its objects and end borrows (runtime/holders.py)."""

from manta._private.protocol.identity import Kind, Principal, Role
from manta._private.runtime.holders import Holders

OWN = Principal(kind=Kind.JOB, role=Role.SUBMIT, name="own", job_id=1)
OTHER = Principal(kind=Kind.JOB, role=Role.ADMIN, name="other", job_id=2)
THIRD = Principal(kind=Kind.JOB, role=Role.SUBMIT, name="third", job_id=3)
AGENT = Principal(kind=Kind.NODE, role=Role.CLUSTER, name="agent")
OID = b"o" * 20


def test_own_job_and_cluster_read_without_a_cap_others_need_the_owners():
    h = Holders(lambda: 1)
    assert h.read_refusal(OWN, OID, b"") == ""
    assert h.read_refusal(AGENT, OID, b"") == ""
    assert "not handed" in h.read_refusal(OTHER, OID, b"")  # admin is no exception: a holder is
    assert h.read_refusal(OTHER, OID, b"x" * 16)
    assert h.read_refusal(OTHER, OID, Holders(lambda: 1).cap(OID))  # another owner's key
    assert h.read_refusal(OTHER, OID, h.cap(OID)) == ""
    assert h.read_refusal(OTHER, b"p" * 20, h.cap(OID))  # a cap is for one object


def test_a_spare_worker_without_a_job_trusts_no_job():
    h = Holders(lambda: 0)
    assert h.read_refusal(Principal(kind=Kind.JOB, role=Role.SUBMIT, name="j", job_id=0), OID, b"")


def test_another_job_ends_only_the_borrows_it_registered():
    h = Holders(lambda: 1)
    assert h.borrow_refusal(OTHER, [OID], [], "b:1")
    assert h.borrow_refusal(OTHER, [OID], [b"x" * 16], "b:1")
    assert h.unborrow_refusal(OTHER, [OID], "a:1")  # our own worker's borrow
    assert h.borrow_refusal(OTHER, [OID], [h.cap(OID)], "b:1") == ""
    assert h.unborrow_refusal(THIRD, [OID], "b:1")
    assert h.borrow_refusal(THIRD, [OID], [h.cap(OID)], "b:1") == ""  # the first registrant keeps it
    assert h.unborrow_refusal(THIRD, [OID], "b:1")
    assert h.unborrow_refusal(OTHER, [OID], "b:1") == ""
    assert h.unborrow_refusal(OTHER, [OID], "b:1")  # once
    assert h.unborrow_refusal(OWN, [OID], "a:1") == ""
    assert h.unborrow_refusal(AGENT, [OID], "a:1") == ""
