"""Simulated nodes: many node agents without workers, in one process, for a real head.

`node.py` decides what one node answers (sans-IO), `fleet.py` joins many of
them to a head over real authenticated connections, `main.py` is the
process (docs/simulation.md).
"""
