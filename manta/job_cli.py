"""`manta job submit|status|logs|stop|list|delete`: Ray's `ray job` commands, over the head's REST API.

    manta job submit [--address URL] [--working-dir DIR] [--runtime-env-json JSON] [--submission-id ID]
                     [--no-wait] [--metadata-json JSON] [--entrypoint-num-cpus N] ... -- ENTRYPOINT...
    manta job status|logs [--follow]|stop|delete ID
    manta job list

The address is the head's dashboard URL (default: RAY_ADDRESS or MANTA_ADDRESS
when either holds an http(s) URL, else http://127.0.0.1:8265); the token is
MANTA_TOKEN, else --token-file, else this machine's cluster owner's.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

_address = click.option("--address", default=None,
                        help="The head's dashboard URL, e.g. http://127.0.0.1:8265 (or RAY_ADDRESS/MANTA_ADDRESS).")
_token_file = click.option("--token-file", default=None,
                           help="File holding your token (default: MANTA_TOKEN, else this machine's cluster owner's).")
_verify = click.option("--verify", default=None, help="https: a CA bundle to verify the head with, or 'false'.")
_headers = click.option("--headers", default=None, help="Extra HTTP headers as a JSON object.")


def _connection(f: Any) -> Any:
    """The options every command takes to reach the head: --address, --token-file, --verify, --headers."""
    return _address(_token_file(_verify(_headers(f))))


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"manta: {message}", err=True)
    sys.exit(code)


def _json_option(text: str | None, flag: str) -> Any:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        _fail(f"{flag} must be JSON: {e}", 2)
    if not isinstance(value, dict):
        _fail(f"{flag} must be a JSON object", 2)
    return value


def _client(address: str | None, token_file: str | None, verify: str | None = None, headers: str | None = None) -> Any:
    from manta.job_submission import JobSubmissionClient

    check: str | bool = True
    if verify is not None:
        check = False if verify.lower() in ("false", "0", "no") else verify
    try:
        return JobSubmissionClient(address, headers=_json_option(headers, "--headers"), verify=check,
                                   token_file=token_file)
    except (ConnectionError, RuntimeError, ValueError) as e:
        _fail(str(e))


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TypeError) as e:
        _fail(str(e))


@click.group()
def job() -> None:
    """Submit, watch and stop jobs on a cluster (Ray's `ray job`)."""


def _follow(client: Any, sid: str) -> None:
    import asyncio

    async def tail() -> None:
        async for chunk in client.tail_job_logs(sid):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    try:
        asyncio.run(tail())
    except RuntimeError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        pass


@job.command(context_settings={"ignore_unknown_options": True})
@_connection
@click.option("--job-id", default=None, help="Deprecated: use --submission-id.")
@click.option("--submission-id", default=None, help="The job's id (default: a new mantasubmit_... id).")
@click.option("--runtime-env", default=None, help="A YAML or JSON file holding the runtime_env.")
@click.option("--runtime-env-json", default=None, help="The runtime_env as JSON.")
@click.option("--working-dir", default=None, help="A local directory, uploaded as the job's working_dir.")
@click.option("--metadata-json", default=None, help="Metadata for the job as a JSON object of strings.")
@click.option("--entrypoint-num-cpus", type=float, default=None, help="CPUs reserved for the entrypoint.")
@click.option("--entrypoint-num-gpus", type=float, default=None, help="GPUs reserved for the entrypoint.")
@click.option("--entrypoint-memory", type=int, default=None, help="Memory (bytes) reserved for the entrypoint.")
@click.option("--entrypoint-resources", default=None, help="Custom resources for the entrypoint, as JSON.")
@click.option("--namespace", default=None, help="manta: the namespace the job's driver runs in "
              "(default: your token's, if it has one; else the driver's own choice).")
@click.option("--no-wait", is_flag=True, help="Do not stream the logs and wait for the job to end.")
@click.argument("entrypoint", nargs=-1, required=True, type=click.UNPROCESSED)
def submit(address: str | None, token_file: str | None, verify: str | None, headers: str | None,
           job_id: str | None, submission_id: str | None, runtime_env: str | None, runtime_env_json: str | None,
           working_dir: str | None, metadata_json: str | None, entrypoint_num_cpus: float | None,
           entrypoint_num_gpus: float | None, entrypoint_memory: int | None, entrypoint_resources: str | None,
           namespace: str | None, no_wait: bool, entrypoint: tuple[str, ...]) -> None:
    """Submits a job: `manta job submit -- python script.py`."""
    import shlex

    from manta.job_submission import JobStatus

    env: dict[str, Any] = {}
    if runtime_env:
        try:
            with open(runtime_env) as f:
                text = f.read()
        except OSError as e:
            _fail(f"--runtime-env: {e}", 2)
        try:
            env = json.loads(text)
        except ValueError:
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                _fail("--runtime-env: the file is not JSON, and PyYAML is not installed to read YAML", 2)
            env = yaml.safe_load(text)
    if runtime_env_json:
        env = _json_option(runtime_env_json, "--runtime-env-json")
    if working_dir:
        env["working_dir"] = working_dir
    client = _client(address, token_file, verify, headers)
    args = list(entrypoint)
    if args and args[0] == "--":
        args = args[1:]
    command = args[0] if len(args) == 1 else shlex.join(args)
    sid = _call(client.submit_job, entrypoint=command, runtime_env=env or None, submission_id=submission_id,
                job_id=job_id, metadata=_json_option(metadata_json, "--metadata-json"),
                entrypoint_num_cpus=entrypoint_num_cpus, entrypoint_num_gpus=entrypoint_num_gpus,
                entrypoint_memory=entrypoint_memory,
                entrypoint_resources=_json_option(entrypoint_resources, "--entrypoint-resources"),
                namespace=namespace)
    line = "-" * 40
    click.echo(f"Job submission server address: {client.address}\n{line}\nJob '{sid}' submitted successfully\n{line}")
    if no_wait:
        click.echo(f"Next steps\n  Query the logs of the job:\n    manta job logs {sid}\n"
                   f"  Query the status of the job:\n    manta job status {sid}\n"
                   f"  Request the job to be stopped:\n    manta job stop {sid}")
        return
    click.echo("Tailing logs until the job exits (disable with --no-wait):")
    _follow(client, sid)
    info = _call(client.get_job_info, sid)
    words = {JobStatus.SUCCEEDED: "succeeded", JobStatus.STOPPED: "was stopped", JobStatus.FAILED: "failed"}
    click.echo(f"{line}\nJob '{sid}' {words.get(info.status, info.status.value)}\n{line}")
    if info.status is JobStatus.FAILED:
        click.echo(info.message or "", err=True)
        sys.exit(1)  # as Ray's, since 2.7: a failed job fails the command


@job.command()
@_connection
@click.argument("job_id")
def status(address: str | None, token_file: str | None, verify: str | None, headers: str | None,
           job_id: str) -> None:
    """A job's status and message."""
    info = _call(_client(address, token_file, verify, headers).get_job_info, job_id)
    click.echo(f"Status for job '{job_id}': {info.status.value}")
    if info.message:
        click.echo(f"Status message: {info.message}")


@job.command()
@_connection
@click.option("--follow", "-f", is_flag=True, help="Keep printing the log until the job ends.")
@click.argument("job_id")
def logs(address: str | None, token_file: str | None, verify: str | None, headers: str | None, follow: bool,
         job_id: str) -> None:
    """A job's output (its entrypoint's stdout and stderr)."""
    client = _client(address, token_file, verify, headers)
    if follow:
        _follow(client, job_id)
    else:
        click.echo(_call(client.get_job_logs, job_id), nl=False)


@job.command()
@_connection
@click.option("--no-wait", is_flag=True, help="Do not wait for the job to end.")
@click.argument("job_id")
def stop(address: str | None, token_file: str | None, verify: str | None, headers: str | None, no_wait: bool,
         job_id: str) -> None:
    """Stops a job: SIGTERM to its process group, SIGKILL a few seconds later."""
    import time

    client = _client(address, token_file, verify, headers)
    stopped = _call(client.stop_job, job_id)
    click.echo(f"Attempting to stop job '{job_id}'" if stopped else f"Job '{job_id}' had already ended")
    if no_wait or not stopped:
        return
    while not _call(client.get_job_status, job_id).is_terminal():
        time.sleep(0.2)
    click.echo(f"Job '{job_id}' was stopped")


@job.command()
@_connection
@click.argument("job_id")
def delete(address: str | None, token_file: str | None, verify: str | None, headers: str | None,
           job_id: str) -> None:
    """Deletes an ended job: its record and its logs."""
    _call(_client(address, token_file, verify, headers).delete_job, job_id)
    click.echo(f"Job '{job_id}' deleted successfully")


@job.command(name="list")
@_connection
def list_(address: str | None, token_file: str | None, verify: str | None, headers: str | None) -> None:
    """Every job you may see."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from manta._private.runtime.terminal import safe_line

    jobs = _call(_client(address, token_file, verify, headers).list_jobs)
    table = Table("submission id", "status", "namespace", "entrypoint", "message", box=None, pad_edge=False)
    for j in jobs:
        table.add_row(Text(safe_line(j.submission_id or "")), j.status.value, Text(safe_line(j.namespace)),
                      Text(safe_line(j.entrypoint)), Text(safe_line(j.message or "")))
    Console(highlight=False).print(table)
