"""The cluster view as deltas: the head's ViewLog and a node's SpillbackView."""

from __future__ import annotations

from manta._private.protocol import messages as m
from manta._private.scheduling.cluster_view import SpillbackView, ViewLog
from manta._private.scheduling.resources import to_units


class Link:
    """Stands for a node's connection: the log only keys weakly on it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[m.ClusterView] = []
        self.view = SpillbackView()

    def deliver(self, msg: m.ClusterView) -> None:
        # As the wire would: encoded and decoded, then applied by the agent.
        msg = m.decode(m.encode(msg))
        self.got.append(msg)
        self.view.apply(msg)


def info(nid: bytes, cpus: float = 4.0, labels: dict[str, str] | None = None) -> m.NodeInfo:
    return m.NodeInfo(nid, f"tcp:127.0.0.1:{nid[0] + 1000}", True, {"CPU": 4.0}, {"CPU": cpus}, 0, [], labels or {})


def send(log: ViewLog[Link], infos: list[m.NodeInfo], links: list[Link]) -> None:
    """Broadcasts `infos` as every live node: those the last view had that
    are not among them have gone."""
    ids = {i.node_id for i in infos}
    for view, to in log.broadcast(infos, links, [nid for nid in log._last if nid not in ids]):
        for link in to:
            link.deliver(view)


def as_seen(link: Link) -> dict[bytes, float]:
    return {nid: n.available.get("CPU", 0) for nid, n in link.view.nodes.items()}


def units(cpus: dict[bytes, float]) -> dict[bytes, float]:
    return {nid: to_units({"CPU": v}).get("CPU", 0) for nid, v in cpus.items()}


def test_a_new_link_gets_the_whole_view_then_only_what_changed() -> None:
    log: ViewLog[Link] = ViewLog()
    a, b = Link("a"), Link("b")
    nodes = [info(bytes([i]) * 16) for i in range(5)]
    send(log, nodes, [a, b])
    assert [v.base for v in a.got] == [0] and len(a.got[0].nodes) == 5
    nodes[2] = info(bytes([2]) * 16, cpus=1.0)
    send(log, nodes, [a, b])
    delta = a.got[-1]
    assert delta.base == 1 and delta.version == 2 and [n.node_id for n in delta.nodes] == [bytes([2]) * 16]
    assert as_seen(a) == as_seen(b) == units({n.node_id: n.available["CPU"] for n in nodes})
    assert as_seen(a)[bytes([2]) * 16] == to_units({"CPU": 1.0})["CPU"]


def test_nothing_changed_sends_nothing_to_links_that_are_current() -> None:
    log: ViewLog[Link] = ViewLog()
    a = Link("a")
    nodes = [info(bytes([i]) * 16) for i in range(3)]
    send(log, nodes, [a])
    assert log.broadcast(nodes, [a], []) == []
    # ...but a link that joined meanwhile still gets the whole view.
    c = Link("c")
    out = log.broadcast(nodes, [a, c], [])
    assert [(v.base, [x.name for x in to]) for v, to in out] == [(0, ["c"])]


def test_a_node_that_leaves_is_removed_and_its_labels_with_it() -> None:
    log: ViewLog[Link] = ViewLog()
    a = Link("a")
    gone = bytes([9]) * 16
    send(log, [info(b"\x01" * 16), info(gone, labels={"zone": "x"})], [a])
    assert a.view.labels[gone]["zone"] == "x"
    send(log, [info(b"\x01" * 16)], [a])
    assert a.got[-1].removed == [gone] and a.got[-1].nodes == []
    assert gone not in a.view.nodes and gone not in a.view.labels


def test_a_link_that_missed_a_version_gets_the_whole_view() -> None:
    # A node whose link was not current for one broadcast (it was not among
    # the links: closed, or not connected yet) cannot take the next delta.
    log: ViewLog[Link] = ViewLog()
    a, b = Link("a"), Link("b")
    nodes = [info(bytes([i]) * 16) for i in range(3)]
    send(log, nodes, [a, b])
    nodes[0] = info(bytes([0]) * 16, cpus=2.0)
    send(log, nodes, [a])  # b missed version 2
    nodes[1] = info(bytes([1]) * 16, cpus=3.0)
    send(log, nodes, [a, b])
    assert a.got[-1].base == 2 and b.got[-1].base == 0
    assert as_seen(a) == as_seen(b)


def test_many_broadcasts_keep_every_link_equal_to_the_head() -> None:
    import random

    rng = random.Random(7)
    log: ViewLog[Link] = ViewLog()
    links = [Link(str(i)) for i in range(4)]
    live = {bytes([i]) * 16: 4.0 for i in range(8)}
    for _ in range(200):
        op = rng.random()
        nid = bytes([rng.randrange(12)]) * 16
        if op < 0.6:
            live[nid] = float(rng.randrange(5))
        elif op < 0.8:
            live.pop(nid, None)
        present = [x for x in links if rng.random() < 0.8]
        send(log, [info(k, v) for k, v in live.items()], present)
        for x in present:
            assert as_seen(x) == units(live)


def test_given_only_the_nodes_that_changed_and_those_gone_every_link_stays_equal_to_the_head() -> None:
    # The head's way: it passes the nodes that reported a change (and some
    # that did not: a report the same as before), and the ones that died.
    import random

    rng = random.Random(11)
    log: ViewLog[Link] = ViewLog()
    links = [Link(str(i)) for i in range(4)]
    live: dict[bytes, float] = {}
    for _ in range(200):
        dirty: set[bytes] = set()
        for _ in range(rng.randrange(4)):
            nid = bytes([rng.randrange(12)]) * 16
            dirty.add(nid)
            if rng.random() < 0.75:
                live[nid] = float(rng.randrange(3))
            else:
                live.pop(nid, None)
        present = [x for x in links if rng.random() < 0.8]
        changed = [info(k, live[k]) for k in dirty if k in live]
        for view, to in log.broadcast(changed, present, [k for k in dirty if k not in live]):
            assert len(view.nodes) <= len(dirty) or view.base == 0  # a delta carries only what changed
            for link in to:
                link.deliver(view)
        for x in present:
            assert as_seen(x) == units(live)


def test_a_link_left_out_is_forgotten() -> None:
    # A closed link (its node died or reconnected) is not held on to.
    log: ViewLog[Link] = ViewLog()
    a, b = Link("a"), Link("b")
    send(log, [info(b"\x01" * 16)], [a, b])
    send(log, [info(b"\x01" * 16)], [b])
    assert list(log._sent) == [b]


def test_a_node_that_died_is_forgotten_before_the_next_view() -> None:
    view = SpillbackView()
    nid = b"\x05" * 16
    view.apply(m.ClusterView(nodes=[info(nid)], version=1))
    assert view.forget(nid) is not None and nid not in view.nodes
    # The delta that removes it later changes nothing more.
    view.apply(m.ClusterView(nodes=[], removed=[nid], version=2, base=1))
    assert view.nodes == {} and view.version == 2
