"""`ecokit certs generate | issue | check`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ecokit.cli.common import ConfigOption, DebugOption, ProfileOption, load_stack, out

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
def check(config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False) -> None:
    """Chain validity, key match and days to expiry of every certificate."""
    stack = load_stack(config, profile)
    statuses = stack.check_certs()
    table = Table(box=None, header_style="bold")
    for column in ("", "certificate", "subject", "days left", "problems"):
        table.add_column(column)
    for s in statuses:
        table.add_row("[green]✓[/green]" if s.ok else "[red]✗[/red]", s.name, s.subject,
                      "" if s.days_left is None else str(s.days_left), "; ".join(s.problems))
    out.print(table)
    bad = [s for s in statuses if not s.ok]
    if bad:
        out.print(f"[red]{len(bad)} of {len(statuses)} certificates need attention[/red]: "
                  "run `ecokit certs generate`")
        raise typer.Exit(1)
    out.print(f"[green]all {len(statuses)} certificates valid[/green]")
