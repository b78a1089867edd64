"""What every ``coretexctl`` command shares: the gateway client, output options and tables."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.table import Table

__all__ = ["ApiError", "Client", "Options", "Unreachable", "_emit", "_kv_table", "_rows_table", "output_option"]


class ApiError(click.ClickException):
    exit_code = 1


class Unreachable(click.ClickException):
    exit_code = 3


@dataclass(frozen=True)
class Client:
    base: str
    key: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base.rstrip("/") + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            problem = json.loads(exc.read() or b"{}")
            detail = problem.get("detail") or problem.get("title") or exc.reason
            errors = problem.get("errors")
            raise ApiError(f"{exc.code}: {detail}" + (f" {json.dumps(errors)}" if errors else "")) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise Unreachable(f"cannot reach the gateway at {self.base}: {exc}") from exc


@dataclass
class Options:
    client: Client
    output: str
    console: Console


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None and isinstance(ctx.obj, Options):
        ctx.obj.output = value


output_option = click.option(
    "--output", "-o", type=click.Choice(["table", "json"]), default=None, expose_value=False,
    callback=_set_output, help="Output format (also accepted before the command).",
)


def _emit(opts: Options, data: Any, table: Table | None = None) -> None:
    if opts.output == "json" or table is None:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        opts.console.print(table)


def _rows_table(title: str, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(value if isinstance(value := row.get(c), str) else json.dumps(value) for c in columns))
    return table


def _kv_table(title: str, data: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(key, value if isinstance(value, str) else json.dumps(value))
    return table
