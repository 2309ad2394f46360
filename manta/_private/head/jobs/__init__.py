"""Jobs submitted over the head's REST API (`manta job submit`, JobSubmissionClient).

- `table.py`: the jobs' records and every decision about them (status
  transitions, when a stop escalates to SIGKILL), sans-IO on an injected clock.
- `supervisor.py`: the I/O: starting each entrypoint as its own process
  group, its logs, reserving its resources, persisting the records.
- `runner.py`: the process that runs one entrypoint and records how it ended.
"""
