"""The head's count of what actors it sent to a node take (head.Node), without processes."""

from manta._private.head.head import Node


def _node(cpus: float) -> Node:
    return Node(b"n", "unix:/n", {"CPU": cpus}, {"CPU": cpus}, 0, None)


def test_an_asked_actors_share_outlives_reports_until_the_node_answers():
    node = _node(4)
    node.asked[b"a"] = {"CPU": 1.0}
    assert node.free_for_placing() == {"CPU": 3.0}
    node.reported({"CPU": 4.0})  # a report made before the node took the lease: the share stays
    assert node.free_for_placing() == {"CPU": 3.0}
    node.answered(b"a")
    assert node.free_for_placing() == {"CPU": 3.0} and not node.asked
    node.reported({"CPU": 3.0})  # the report after the answer counts it
    assert node.free_for_placing() == {"CPU": 3.0}


def test_a_burst_counts_every_actor_asked_and_answered():
    node = _node(4)
    for i in range(3):
        node.asked[bytes([i])] = {"CPU": 1.0}
    node.answered(b"\x00")
    assert node.free_for_placing() == {"CPU": 1.0}
    node.answered(b"zz")  # an answer for nothing asked changes nothing
    assert node.free_for_placing() == {"CPU": 1.0}
