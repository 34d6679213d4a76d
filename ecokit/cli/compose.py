"""`ecokit compose`: write the docker runtime's stack as a docker-compose.yml."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ecokit.cli.common import ConfigOption, DebugOption, ProfileOption, load_stack, out

# This module's commands; ecokit.cli joins them into the `ecokit` command.
app = typer.Typer()


@app.command()
def compose(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="where to write it "
                                                "(default: docker-compose.yml next to ecokit.yaml; - for stdout)",
                                                show_default=False)] = None,
    config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False,
) -> None:
    """Write a docker-compose.yml equivalent to `ecokit up --runtime docker` (mode 0600: it holds secrets)."""
    from ecokit.runtime.docker.compose import compose_notes, render_compose

    stack = load_stack(config, profile)
    if stack.config.tls.enabled:
        stack.generate_certs()
    plan = stack.plan("docker")
    text = render_compose(stack.docker_settings(), plan)
    if output is not None and str(output) == "-":
        out.print(text, markup=False, highlight=False, soft_wrap=True, end="")
        return
    path = output or stack.project_dir / "docker-compose.yml"
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    out.print(f"[green]wrote[/green] {path} ({len(plan)} services, mode 600)")
    for note in compose_notes(plan):
        out.print(f"[yellow]note:[/yellow] {note}")
    out.print(f"start it with: docker compose -f {path} up -d; stop it with `ecokit down` or docker compose down")
