"""`ecokit certs generate | issue | check`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from ecokit.cli.common import (
    ConfigOption,
    DebugOption,
    JsonOption,
    OutputOption,
    ProfileOption,
    emit,
    err,
    load_stack,
    out,
)

# This module's commands; ecokit.cli joins them into the `ecokit` command.
app = typer.Typer()

certs_app = typer.Typer(help="The stack's CA, server and client certificates.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")


@certs_app.command("generate")
def generate(force: Annotated[bool, typer.Option("--force", help="replace even valid certificates")] = False,
             config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False) -> None:
    """CA + server certificate + one client certificate per device and service user."""
    stack = load_stack(config, profile)
    with out.status(f"generating certificates in {stack.cert_paths.root}"):
        report = stack.generate_certs(force=force)
    out.print(f"[green]created[/green] {len(report.created)}, kept {len(report.kept)} valid, in "
              f"{stack.cert_paths.root}")
    if report.created:
        shown = ", ".join(report.created[:8]) + (" …" if len(report.created) > 8 else "")
        out.print(f"  created: {shown}")
    out.print(f"  CA: {stack.cert_paths.ca_cert}")


@certs_app.command("issue")
def issue(device: Annotated[str, typer.Argument(help="a registered device id or service user")],
          force: Annotated[bool, typer.Option("--force", help="replace a valid certificate")] = False,
          config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False) -> None:
    """Issue (or renew) one client certificate."""
    from ecokit.errors import ConfigError

    stack = load_stack(config, profile)
    if device not in stack.cert_clients():
        raise ConfigError(f"{device!r} is neither a registered device nor a service user",
                          hint=f"run: ecokit devices add {device}")
    report = stack.cert_authority().issue_client(device, force=force)
    verb = "issued" if report.created else "kept (still valid)"
    out.print(f"{verb}: {stack.cert_paths.client_cert(device)}")
    out.print(f"key:    {stack.cert_paths.client_key(device)}")


@certs_app.command("check")
def check(config: ConfigOption = None, profile: ProfileOption = None, as_json: JsonOption = False,
          output: OutputOption = None, debug: DebugOption = False) -> None:
    """Chain validity, key match and days to expiry of every certificate (exit 1 when one needs attention)."""
    stack = load_stack(config, profile)
    statuses = stack.check_certs()
    bad = [s for s in statuses if not s.ok]
    emit({"certs_dir": str(stack.cert_paths.root), "ok": not bad, "needing_attention": len(bad),
          "certificates": [_cert_row(s) for s in statuses]}, as_json=as_json, output=output)
    if not as_json:
        table = Table(box=None, header_style="bold")
        for column in ("", "certificate", "subject", "days left", "problems"):
            table.add_column(column)
        for s in statuses:
            table.add_row("[green]✓[/green]" if s.ok else "[red]✗[/red]", s.name, s.subject,
                          "" if s.days_left is None else str(s.days_left), "; ".join(s.problems))
        out.print(table)
    if bad:
        err.print(f"[red]{len(bad)} of {len(statuses)} certificates need attention[/red]: "
                  "run `ecokit certs generate`")
        raise typer.Exit(1)
    if not as_json:
        out.print(f"[green]all {len(statuses)} certificates valid[/green]")


def _cert_row(status: Any) -> dict[str, Any]:
    from ecokit.report import stamped

    return {"name": status.name, "path": str(status.path), "ok": status.ok, "subject": status.subject or None,
            "days_left": status.days_left, **stamped("not_after", status.not_after),
            "problems": list(status.problems)}
