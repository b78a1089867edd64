"""``coretexctl workflows`` and ``coretexctl runs``: workflow templates and their runs, through the gateway.

Same conventions as :mod:`coretex.cli.ctl`: ``--output json`` on every command (also accepted
before the command), exit codes 0 ok, 1 the API refused or the run did not succeed, 2 usage
error, 3 the gateway could not be reached.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import click
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from coretex.cli._common import Options, _emit, _kv_table, _rows_table, output_option

RUN_TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
STEP_DONE = frozenset({"succeeded", "failed", "cancelled", "timed_out", "skipped", "blocked"})
POLL_S = 0.25


def _path(*parts: str) -> str:
    return "/".join(quote(p, safe="") for p in parts)


# ---- workflows ----------------------------------------------------------------------------------
@click.group("workflows")
def workflows() -> None:
    """Save (apply) and read workflow templates."""


@workflows.command("apply")
@output_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def apply(opts: Options, file: Path) -> None:
    """Save the workflow in FILE (YAML or JSON) as its next version (unchanged: the same version)."""
    saved = opts.client.call("POST", "/api/v1/workflows", _read_document(file))
    _emit(opts, saved, _kv_table("workflow saved" if saved.get("created") else "workflow unchanged",
                                 _without(saved, "document")))


@workflows.command("list")
@output_option
@click.pass_obj
def workflows_list(opts: Options) -> None:
    """Workflows of your tenant at their latest version."""
    listed = opts.client.call("GET", "/api/v1/workflows")
    _emit(opts, listed, _rows_table("workflows", listed, ("id", "version", "name", "steps", "saved_at", "saved_by")))


@workflows.command("get")
@output_option
@click.argument("workflow_id")
@click.option("--version", type=click.IntRange(min=1), default=None, help="Default: the latest.")
@click.pass_obj
def workflows_get(opts: Options, workflow_id: str, version: int | None) -> None:
    """Show one workflow version with its document."""
    query = f"?version={version}" if version is not None else ""
    saved = opts.client.call("GET", f"/api/v1/workflows/{_path(workflow_id)}{query}")
    _emit(opts, saved, _kv_table(f"workflow {workflow_id}", saved))


def _read_document(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
        return json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"{file}: cannot be read as {'JSON' if file.suffix == '.json' else 'YAML'}: {exc}",
                                 param_hint="FILE") from exc


# ---- runs ---------------------------------------------------------------------------------------
@click.group("runs")
def runs() -> None:
    """Start, inspect, cancel and rerun workflow runs; approve or reject their approval steps."""


@runs.command("start")
@output_option
@click.argument("workflow_id")
@click.option("--input", "input_arg", default="{}", show_default=True,
              help="Run input: JSON, or @FILE holding JSON.")
@click.option("--dry-run", is_flag=True, help="Control flow, decisions and schema checks only; no real job runs.")
@click.option("--idempotency-key", default="", help="Starting again with the same key returns the first run.")
@click.option("--version", type=click.IntRange(min=1), default=None, help="Workflow version (default: the latest).")
@click.option("--wait/--no-wait", default=False, help="Show progress until the run ends; exit 1 unless it succeeded.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait with --wait.")
@click.pass_obj
def start(opts: Options, workflow_id: str, input_arg: str, dry_run: bool, idempotency_key: str,
          version: int | None, wait: bool, timeout: float) -> None:
    """Start a run of WORKFLOW_ID."""
    body: dict[str, Any] = {"input": _input(input_arg), "dry_run": dry_run}
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    if version is not None:
        body["version"] = version
    receipt = opts.client.call("POST", f"/api/v1/workflows/{_path(workflow_id)}/runs", body)
    if not wait:
        _emit(opts, receipt, _kv_table("run", receipt))
        return
    run, ended = _wait(opts, receipt["run_id"], timeout)
    _show_run(opts, run)
    if not ended:
        click.echo(f"run {run['run_id']} still {run['status']} after {timeout:.0f}s", err=True)
    if run.get("status") != "succeeded":
        sys.exit(1)


@runs.command("get")
@output_option
@click.argument("run_id")
@click.pass_obj
def runs_get(opts: Options, run_id: str) -> None:
    """Show a run: status, every step, timers, output or error."""
    _show_run(opts, opts.client.call("GET", f"/api/v1/runs/{_path(run_id)}"))


@runs.command("list")
@output_option
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--before", type=float, default=None, help="Only runs created before (epoch seconds): a page's "
                                                           "next_before.")
@click.pass_obj
def runs_list(opts: Options, limit: int, before: float | None) -> None:
    """Runs of your tenant, newest first (one page; `next_before` is printed for the next)."""
    query: dict[str, Any] = {"limit": limit}
    if before is not None:
        query["before"] = repr(before)
    page = opts.client.call("GET", f"/api/v1/runs?{urlencode(query)}")
    listed = page["runs"]
    _emit(opts, listed, _rows_table("runs", listed, ("run_id", "workflow_id", "workflow_version", "status",
                                                      "started_by", "created_at", "error")))
    if opts.output != "json" and page.get("next_before") is not None:
        click.echo(f"more: --before {page['next_before']!r}", err=True)


@runs.command("timeline")
@output_option
@click.argument("run_id")
@click.option("--page-size", type=click.IntRange(1, 1000), default=200, show_default=True,
              help="Entries fetched per request (every page is followed).")
@click.pass_obj
def timeline(opts: Options, run_id: str, page_size: int) -> None:
    """Every entry of a run's timeline, oldest first (follows the pages to the end)."""
    entries: list[dict[str, Any]] = []
    cursor = ""
    while True:
        query = {"limit": page_size, **({"after": cursor} if cursor else {})}
        page = opts.client.call("GET", f"/api/v1/runs/{_path(run_id)}/timeline?{urlencode(query)}")
        entries += page["entries"]
        cursor = page.get("next_cursor") or ""
        if not cursor:
            break
    rows = [{"id": e.get("id"), "type": e.get("type"), "at": _clock(e.get("at")), "step": e.get("step"),
             "detail": _without(e, "id", "type", "at", "step")} for e in entries]
    _emit(opts, entries, _rows_table(f"run {run_id}", rows, ("id", "at", "type", "step", "detail")))


@runs.command("cancel")
@output_option
@click.argument("run_id")
@click.option("--reason", default="", help="Recorded with the cancel.")
@click.pass_obj
def cancel(opts: Options, run_id: str, reason: str) -> None:
    """Cancel a run: its running jobs and timers stop; a run that ended keeps its status."""
    _show_run(opts, opts.client.call("POST", f"/api/v1/runs/{_path(run_id)}/cancel", {"reason": reason}))


@runs.command("rerun")
@output_option
@click.argument("run_id")
@click.option("--from-step", default="", help="Run this step and everything after it again; reuse the rest.")
@click.option("--dry-run/--no-dry-run", default=None, help="Default: as the original run.")
@click.pass_obj
def rerun(opts: Options, run_id: str, from_step: str, dry_run: bool | None) -> None:
    """Start a new run with the same workflow version and input, linked to RUN_ID."""
    body: dict[str, Any] = {"from_step": from_step}
    if dry_run is not None:
        body["dry_run"] = dry_run
    receipt = opts.client.call("POST", f"/api/v1/runs/{_path(run_id)}/rerun", body)
    _emit(opts, receipt, _kv_table("rerun", receipt))


@runs.command("approve")
@output_option
@click.argument("run_id")
@click.argument("step_id")
@click.option("--reason", default="", help="Why; recorded with the decision.")
@click.pass_obj
def approve(opts: Options, run_id: str, step_id: str, reason: str) -> None:
    """Approve approval step STEP_ID of RUN_ID (never a run you started, unless the step allows it)."""
    _decide(opts, run_id, step_id, "approve", reason)


@runs.command("reject")
@output_option
@click.argument("run_id")
@click.argument("step_id")
@click.option("--reason", default="", help="Why; recorded with the decision.")
@click.pass_obj
def reject(opts: Options, run_id: str, step_id: str, reason: str) -> None:
    """Reject approval step STEP_ID of RUN_ID: the step fails."""
    _decide(opts, run_id, step_id, "reject", reason)


def _decide(opts: Options, run_id: str, step_id: str, action: str, reason: str) -> None:
    run = opts.client.call("POST", f"/api/v1/runs/{_path(run_id)}/steps/{_path(step_id)}/{action}",
                           {"reason": reason})
    _show_run(opts, run)


def _input(arg: str) -> Any:
    text = arg
    if arg.startswith("@"):
        try:
            text = Path(arg[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {arg[1:]}: {exc}", param_hint="--input") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from exc


def _wait(opts: Options, run_id: str, timeout: float) -> tuple[dict[str, Any], bool]:
    """Poll the run until it ends or ``timeout`` passes, showing its steps' progress on stderr."""
    deadline = time.monotonic() + timeout
    console = Console(stderr=True)
    columns = (TextColumn("run {task.fields[run_id]} [bold]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("steps"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("pending", total=None, run_id=run_id[:8])
        while True:
            run: dict[str, Any] = opts.client.call("GET", f"/api/v1/runs/{_path(run_id)}")
            steps = run.get("steps") or []
            done = sum(1 for s in steps if s.get("status") in STEP_DONE)
            progress.update(task, description=run.get("status", "?"), total=len(steps), completed=done)
            if run.get("status") in RUN_TERMINAL:
                return run, True
            if time.monotonic() > deadline:
                return run, False
            time.sleep(POLL_S)


def _show_run(opts: Options, run: dict[str, Any]) -> None:
    if opts.output == "json":
        _emit(opts, run)
        return
    summary = _without(run, "steps", "input", "timers")
    opts.console.print(_kv_table(f"run {run.get('run_id', '')}", summary))
    steps = [{**s, "detail": s.get("error") or s.get("reason") or ""} for s in run.get("steps") or []]
    opts.console.print(_rows_table("steps", steps, ("id", "type", "status", "attempt", "job_id", "detail")))
    if run.get("timers"):
        opts.console.print(_rows_table("timers", run["timers"], ("id", "due")))
    if run.get("status") not in RUN_TERMINAL:
        waiting = [s["id"] for s in run.get("steps") or [] if s.get("status") == "waiting"]
        if waiting:
            opts.console.print(f"waiting: {', '.join(waiting)}", highlight=False)


def _without(data: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in names}


def _clock(at: Any) -> str:
    if isinstance(at, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"
    return "" if at is None else str(at)

