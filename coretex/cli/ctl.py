"""``coretexctl``: operate a Coretex deployment through its REST gateway.

Exit codes: 0 success, 1 the API refused or the job did not succeed, 2 usage error (click),
3 the gateway could not be reached.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from coretex.cli._common import (
    ApiError,
    Client,
    Options,
    _emit,
    _kv_table,
    _rows_table,
    output_option,
)
from coretex.cli.stack import gateway_base

TERMINAL = {"SUCCEEDED", "FAILED", "DENIED", "CANCELLED", "TIMEOUT"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--gateway", envvar="CORETEX_GATEWAY_URL", help="Gateway base URL (default: the local stack).")
@click.option("--api-key", envvar="CORETEX_API_KEY", help="API key (default: .coretex/api-key of `make up`).")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def main(ctx: click.Context, gateway: str | None, api_key: str | None, output: str) -> None:
    """Operate Coretex: jobs, workflows and runs, dead letters, approvals, status; policy and audit tools."""
    local = gateway_base(Path(".coretex"))
    base = gateway or (local[0] if local else "http://127.0.0.1:8080")
    key = api_key or (local[1] if local else "")
    ctx.obj = Options(Client(base, key), output, Console())


@main.group()
def jobs() -> None:
    """Submit and inspect jobs."""


@jobs.command("submit")
@output_option
@click.argument("topic")
@click.option("--input", "input_json", default="{}", show_default=True, help="Job input as JSON.")
@click.option("--idempotency-key", default="", help="Deduplicate submissions with the same key.")
@click.option("--wait/--no-wait", default=False, help="Wait until the job ends.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait with --wait.")
@click.pass_obj
def submit(opts: Options, topic: str, input_json: str, idempotency_key: str, wait: bool, timeout: float) -> None:
    """Submit a job on TOPIC."""
    try:
        payload = json.loads(input_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from exc
    body: dict[str, Any] = {"topic": topic, "input": payload}
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    receipt = opts.client.call("POST", "/api/v1/jobs", body)
    if not wait:
        _emit(opts, receipt, _kv_table("job", receipt))
        return
    job = _wait(opts, receipt["job_id"], timeout)
    _emit(opts, job, _kv_table("job", job))
    if job.get("state") != "SUCCEEDED":
        sys.exit(1)


@jobs.command("get")
@output_option
@click.argument("job_id")
@click.pass_obj
def get(opts: Options, job_id: str) -> None:
    """Show one job with its decision and result."""
    job = opts.client.call("GET", f"/api/v1/jobs/{job_id}")
    _emit(opts, job, _kv_table("job", job))


@jobs.command("history")
@output_option
@click.argument("job_id")
@click.pass_obj
def history(opts: Options, job_id: str) -> None:
    """Every state change of a job and why (pending reasons included), oldest first."""
    events = opts.client.call("GET", f"/api/v1/jobs/{job_id}/history")
    _emit(opts, events, _rows_table(f"job {job_id}", events, ("at", "from", "to", "reason")))


@jobs.command("cancel")
@output_option
@click.argument("job_id")
@click.option("--reason", default="", help="Recorded with the cancel.")
@click.pass_obj
def cancel(opts: Options, job_id: str, reason: str) -> None:
    """Cancel a job (a running handler is told within one heartbeat)."""
    job = opts.client.call("POST", f"/api/v1/jobs/{job_id}/cancel", {"reason": reason})
    _emit(opts, job, _kv_table("job", job))


@main.group()
def dlq() -> None:
    """Dead-lettered jobs: list, retry as a new job, delete."""


@dlq.command("list")
@output_option
@click.option("--limit", default=50, show_default=True)
@click.pass_obj
def dlq_list(opts: Options, limit: int) -> None:
    """Dead letters of your tenant, newest first."""
    entries = opts.client.call("GET", f"/api/v1/dlq?limit={limit}")
    _emit(opts, entries, _rows_table("dead letters", entries,
                                     ("job_id", "topic", "error_code", "last_state", "attempts", "error_message")))


@dlq.command("retry")
@output_option
@click.argument("job_id")
@click.pass_obj
def dlq_retry(opts: Options, job_id: str) -> None:
    """Submit a dead job again as a new job linked by retry_of."""
    receipt = opts.client.call("POST", f"/api/v1/dlq/{job_id}/retry", {})
    _emit(opts, receipt, _kv_table("retried", receipt))


@dlq.command("delete")
@click.argument("job_id")
@click.pass_obj
def dlq_delete(opts: Options, job_id: str) -> None:
    """Delete a dead letter (the job record stays)."""
    opts.client.call("DELETE", f"/api/v1/dlq/{job_id}")
    click.echo(f"deleted DLQ entry {job_id}")


@main.group()
def approvals() -> None:
    """Jobs waiting for a human: list, approve, reject."""


@approvals.command("list")
@output_option
@click.pass_obj
def approvals_list(opts: Options) -> None:
    """Pending approvals of your tenant."""
    pending = opts.client.call("GET", "/api/v1/approvals")
    _emit(opts, pending, _rows_table("pending approvals", pending,
                                     ("job_id", "rule_id", "reason", "requested_by", "policy_snapshot")))


@approvals.command("approve")
@output_option
@click.argument("job_id")
@click.option("--note", default="", help="Why; recorded with the decision.")
@click.pass_obj
def approve(opts: Options, job_id: str, note: str) -> None:
    """Approve a parked job (never your own)."""
    _decide(opts, job_id, "approve", note)


@approvals.command("reject")
@output_option
@click.argument("job_id")
@click.option("--note", default="", help="Why; recorded with the decision.")
@click.pass_obj
def reject(opts: Options, job_id: str, note: str) -> None:
    """Reject a parked job: it ends DENIED (approval_rejected)."""
    _decide(opts, job_id, "reject", note)


def _decide(opts: Options, job_id: str, action: str, note: str) -> None:
    decided = opts.client.call("POST", f"/api/v1/approvals/{job_id}/{action}", {"note": note})
    _emit(opts, decided, _kv_table("approval", decided))


@main.command()
@output_option
@click.pass_obj
def status(opts: Options) -> None:
    """Health of Redis, the kernel and beat, and the configured pools."""
    data = opts.client.call("GET", "/api/v1/status")
    table = Table(title=f"coretex {data.get('version', '')} namespace {data.get('namespace', '')}")
    table.add_column("component")
    table.add_column("ok")
    table.add_column("detail")
    for name, info in sorted(data.get("components", {}).items()):
        detail = {k: v for k, v in info.items() if k != "ok"}
        table.add_row(name, "yes" if info.get("ok") else "[red]no[/red]", json.dumps(detail))
    _emit(opts, data, table)


def _wait(opts: Options, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with opts.console.status(f"waiting for job {job_id}"):
        while True:
            job: dict[str, Any] = opts.client.call("GET", f"/api/v1/jobs/{job_id}")
            if job.get("state") in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise ApiError(f"job {job_id} still {job.get('state')} after {timeout:.0f}s")
            time.sleep(0.2)


def _attach_policy_and_audit() -> None:
    """``coretexctl policy test|keygen|sign|verify`` and ``coretexctl audit verify`` (these read files or
    Redis directly, not the gateway)."""
    from coretex.cli.policy_cmds import audit, policy
    from coretex.cli.policy_keys import keygen, sign, verify

    for command in (keygen, sign, verify):
        policy.add_command(command)
    main.add_command(policy)
    main.add_command(audit)


def _attach_workflows_and_runs() -> None:
    """``coretexctl workflows ...`` and ``coretexctl runs ...`` (through the gateway, like jobs)."""
    from coretex.cli.workflow_cmds import runs, workflows

    main.add_command(workflows)
    main.add_command(runs)


_attach_policy_and_audit()
_attach_workflows_and_runs()


if __name__ == "__main__":
    main()
