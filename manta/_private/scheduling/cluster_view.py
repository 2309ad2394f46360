"""The cluster view the head sends every node for spillback, as deltas.

Without I/O: the head keeps a `ViewLog` and the node agent a `SpillbackView`.

Every change to a node's resources goes to every node, so the whole view
per broadcast is n squared: at 10,000 simulated nodes one broadcast
queued 7.1 GB (BENCHMARKS.md, "Simulated nodes"). A node that has the
previous version gets only the nodes that changed and the ones that left;
a node that does not (it just joined, or its link is new) gets the whole
view. Deltas are safe because a link delivers every frame in order or
closes, and a new link starts from a whole view again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Generic, TypeVar

from manta._private.protocol import messages as m
from manta._private.scheduling.policy import NodeView, node_labels
from manta._private.scheduling.resources import to_units

log = logging.getLogger(__name__)
L = TypeVar("L")  # a link: anything hashable (the head's Connection)


class ViewLog(Generic[L]):
    """The head's side: what the last broadcast said of each node, and which
    version each link (a node's connection to the head) was sent last."""

    def __init__(self) -> None:
        self.version = 0
        self._last: dict[bytes, m.NodeInfo] = {}
        # The links of the last broadcast only: one left out (closed, its node
        # dead) is forgotten, and would get the whole view again. A plain dict
        # made anew: a WeakKeyDictionary took half the time of a delta to
        # 10,000 nodes (5 of 11 ms, cProfile).
        self._sent: dict[L, int] = {}

    def broadcast(
        self, changed: Iterable[m.NodeInfo], links: Iterable[L], gone: Iterable[bytes],
    ) -> list[tuple[m.ClusterView, list[L]]]:
        """Takes what may have changed since the last broadcast (`changed`, the
        live nodes that reported a change; `gone`, the nodes that left) and
        returns each message to send with the links to send it on: the delta
        to links that have the last version, the whole view to the others,
        nothing to a link whose view is still current. Only the nodes that
        reported: building and comparing every node's info was 0.7 us a node,
        7.4 ms a broadcast at 10,000 nodes (`simnodes.py --model`)."""
        base = self.version
        delta = self._advance(changed, gone)
        to_delta: list[L] = []
        to_whole: list[L] = []
        version, last = self.version, self._sent
        sent = self._sent = dict.fromkeys(links, version)
        for link in sent:
            had = last.get(link)
            if had != version:
                (to_delta if delta is not None and had == base else to_whole).append(link)
        out: list[tuple[m.ClusterView, list[L]]] = []
        if to_delta and delta is not None:
            out.append((delta, to_delta))
        if to_whole:
            out.append((m.ClusterView(nodes=list(self._last.values()), version=self.version), to_whole))
        return out

    def _advance(self, infos: Iterable[m.NodeInfo], gone: Iterable[bytes]) -> m.ClusterView | None:
        """The delta from the last view, `infos` and `gone` applied, or None
        if nothing changed (then the version stays)."""
        last = self._last
        changed = [i for i in infos if last.get(i.node_id) != i]
        removed = [nid for nid in gone if nid in last]  # each once: the head's are a set
        if not changed and not removed and self.version:
            return None
        for i in changed:
            last[i.node_id] = i
        for nid in removed:
            del last[nid]
        base = self.version
        self.version += 1
        return m.ClusterView(nodes=changed, removed=removed, version=self.version, base=base)


class SpillbackView:
    """A node agent's side: every other node's resources and labels, as the
    head last said them. Changed in place, so a reader's reference stays good."""

    def __init__(self) -> None:
        self.version = 0
        self.nodes: dict[bytes, NodeView] = {}
        self.labels: dict[bytes, dict[str, str]] = {}

    def apply(self, msg: m.ClusterView) -> None:
        if msg.base == 0:
            self.nodes.clear()
            self.labels.clear()
        elif msg.base != self.version:
            # The head sends a delta only on a link that had its base; this
            # would be a bug there. Applied anyway: the next whole view
            # (a new link) repairs it, and spillback only uses it as a hint.
            log.error("cluster view delta on version %d, but this node has %d", msg.base, self.version)
        for n in msg.nodes:
            self.nodes[n.node_id] = NodeView(n.node_id, n.address, to_units(n.resources), to_units(n.available))
            self.labels[n.node_id] = node_labels(n.node_id, n.labels)
        for nid in msg.removed:
            self.forget(nid)
        self.version = msg.version

    def forget(self, node_id: bytes) -> NodeView | None:
        """A node the head said died: not spilled to before the next view."""
        self.labels.pop(node_id, None)
        return self.nodes.pop(node_id, None)
