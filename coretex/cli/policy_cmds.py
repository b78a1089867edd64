"""``coretexctl policy test DIR`` and ``coretexctl audit verify``: the two offline policy tools.

Neither goes through the gateway. ``policy test`` is pure (bundles on disk, no Redis): it loads
every ``*.yaml`` / ``*.yml`` bundle under DIR as one snapshot, runs the bundles' own tests and
shows rule coverage, like ``opa test --coverage``. ``audit verify`` reads the audit stream from
Redis directly (``CORETEX_REDIS_URL``, ``CORETEX_NAMESPACE``) and checks its hash chain.

Exit codes, as in :mod:`coretex.cli.ctl`: 0 all good, 1 a test failed / a bundle does not load /
the chain is broken, 2 usage error, 3 Redis could not be reached. ``--output json`` (also taken
from ``coretexctl -o json`` when attached there) prints one JSON document instead of tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from coretex.errors import CoretexError, PolicyError, StoreError
from coretex.kernel.audit import AuditVerification, DecisionAuditLog, PolicyChangeLog
from coretex.policy import BundleTestReport, PolicySet, bundle_test_report, load_bundles
from coretex.settings import load_settings
from coretex.store import connect

BUNDLE_SUFFIXES = (".yaml", ".yml")
_OUTPUT = click.Choice(["table", "json"])


class Failed(click.ClickException):
    """A bundle test failed, a bundle did not load, or the audit chain is broken."""

    exit_code = 1


class StoreUnreachable(click.ClickException):
    exit_code = 3


def _output_of(ctx: click.Context, output: str | None) -> str:
    """``--output`` of this command, else that of ``coretexctl`` (its ``Options.output``), else table."""
    if output is not None:
        return output
    return str(getattr(ctx.find_root().obj, "output", None) or "table")


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


# --- policy test -----------------------------------------------------------------------------------


@click.group("policy")
def policy() -> None:
    """Work with policy bundles."""


def bundle_sources(directory: Path) -> list[tuple[str, str]]:
    """``(name, text)`` of every bundle under ``directory`` (recursive, sorted; names relative to it)."""
    files = sorted(p for p in directory.rglob("*") if p.suffix in BUNDLE_SUFFIXES and p.is_file())
    sources = []
    for path in files:
        try:
            sources.append((path.relative_to(directory).as_posix(), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise Failed(f"policy bundle {str(path)!r}: cannot be read: {exc}") from exc
    return sources


@policy.command("test")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--output", "-o", type=_OUTPUT, default=None, help="table (default) or json.")
@click.pass_context
def policy_test(ctx: click.Context, directory: Path, output: str | None) -> None:
    """Run the tests of every bundle in DIRECTORY against all of them together; show rule coverage."""
    sources = bundle_sources(directory)
    if not sources:
        raise Failed(f"{directory}: holds no *.yaml or *.yml bundle")
    try:
        compiled = PolicySet(load_bundles(sources))
    except PolicyError as exc:
        raise Failed(str(exc)) from exc
    report = bundle_test_report(compiled)
    if _output_of(ctx, output) == "json":
        _emit_json(_report_json(compiled, report))
    else:
        _print_report(Console(), compiled, report)
    if not report.passed:
        ctx.exit(1)


def _report_json(compiled: PolicySet, report: BundleTestReport) -> dict[str, Any]:
    return {
        "passed": report.passed,
        "snapshot": compiled.snapshot_id,
        "tests": len(report.results),
        "failures": [
            {"bundle": f.test.bundle, "test": f.test.name, "message": f.message,
             "actual": f.actual.kind.value, "actual_rule_id": f.actual.rule_id}
            for f in report.failures
        ],
        "coverage": round(report.coverage, 4),
        "rules": {rule_id: list(tests) for rule_id, tests in report.rule_hits.items()},
        "uncovered_rule_ids": list(report.uncovered_rule_ids),
    }


def _print_report(console: Console, compiled: PolicySet, report: BundleTestReport) -> None:
    for failure in report.failures:
        console.print(f"[red]FAIL[/red] {failure.message}", highlight=False)
    table = Table(title=f"rule coverage, snapshot {compiled.snapshot_id}")
    table.add_column("rule")
    table.add_column("bundle")
    table.add_column("hits", justify="right")
    table.add_column("tests")
    for rule_id, tests in report.rule_hits.items():
        hits = str(len(tests)) if tests else "[yellow]0[/yellow]"
        table.add_row(rule_id, compiled.rule(rule_id).source, hits, ", ".join(tests))
    console.print(table)
    passed = len(report.results) - len(report.failures)
    verdict = "[green]PASS[/green]" if report.passed else "[red]FAIL[/red]"
    console.print(f"{verdict}: {passed}/{len(report.results)} tests passed; "
                  f"coverage {report.coverage:.0%} of {len(report.rule_hits)} rules", highlight=False)


# --- audit verify ----------------------------------------------------------------------------------


@click.group("audit")
def audit() -> None:
    """Check the decision and policy audit logs."""


@audit.command("verify")
@click.option("--log", "which", type=click.Choice(["decisions", "policy"]), default="decisions", show_default=True,
              help="The decision audit, or the policy publish/rollback audit.")
@click.option("--start", default=None, help="Stream id to start at (default: the oldest record).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Check at most this many records.")
@click.option("--output", "-o", type=_OUTPUT, default=None, help="table (default) or json.")
@click.pass_context
def audit_verify(ctx: click.Context, which: str, start: str | None, limit: int | None, output: str | None) -> None:
    """Recompute the hash chain of an audit log; exit 1 naming the first bad record if it is broken."""
    try:
        settings = load_settings()
    except CoretexError as exc:
        raise click.UsageError(str(exc)) from exc
    client = connect(settings)
    try:
        log = DecisionAuditLog(client, settings) if which == "decisions" else PolicyChangeLog(client, settings)
        result = _verify_with_progress(log.stream.length(), limit, lambda tick: log.stream.verify(start, limit, tick))
    except StoreError as exc:
        raise StoreUnreachable(f"cannot read the audit log at {settings.redis_url}: {exc}") from exc
    finally:
        client.close()
    data = {"log": which, "ok": result.ok, "checked": result.checked, "first_bad_id": result.first_bad_id or None,
            "reason": result.reason or None, "anchor": result.anchor, "trimmed": result.trimmed}
    if _output_of(ctx, output) == "json":
        _emit_json(data)
    else:
        _print_verification(Console(), which, result)
    if not result.ok:
        ctx.exit(1)


def _verify_with_progress(
    total: int, limit: int | None, run: Callable[[Callable[[int], None]], AuditVerification]
) -> AuditVerification:
    console = Console(stderr=True)
    columns = (TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("verify", total=min(total, limit) if limit else total)
        return run(lambda n: progress.advance(task, n))


def _print_verification(console: Console, which: str, result: AuditVerification) -> None:
    if result.ok:
        console.print(f"[green]intact[/green]: {which} audit, {result.checked} records checked, "
                      f"{result.trimmed} trimmed earlier (anchor {result.anchor[:16]}...)", highlight=False)
        return
    console.print(f"[red]BROKEN[/red]: {which} audit, first bad record {result.first_bad_id or '(none left)'}: "
                  f"{result.reason} ({result.checked} records checked before it)", highlight=False)
