"""`ecokit geofences list | import FILE | export`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
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
from ecokit.stack import Stack

# This module's commands; ecokit.cli joins them into the `ecokit` command.
app = typer.Typer()

geofences_app = typer.Typer(help="Geofences (config/geofences.geojson): list, import, export.", no_args_is_help=True)
app.add_typer(geofences_app, name="geofences")


def _warn(warnings: tuple[str, ...]) -> None:
    for warning in warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)


@geofences_app.command("list")
def list_geofences(as_json: JsonOption = False, output: OutputOption = None, config: ConfigOption = None,
                   profile: ProfileOption = None, debug: DebugOption = False) -> None:
    """The declared geofences (the file is validated: every problem is named)."""
    stack = load_stack(config, profile)
    fences = stack.geofences()
    label = stack.geofence_store().label
    rows = [f.summary() for f in fences.fences]
    emit({"file": label, "exists": stack.geofences_file.exists(), "geofences": rows,
          "warnings": list(fences.warnings)}, as_json=as_json, output=output)
    _warn(fences.warnings)
    if as_json:
        return
    if not rows:
        out.print(f"no geofences in {label}" + ("" if stack.geofences_file.exists() else " (no such file yet)"))
        out.print("[dim]add some: ecokit geofences import zones.geojson[/dim]")
        return
    table = Table(title=f"{len(rows)} geofence(s) in {label}", box=None, header_style="bold")
    for column in ("id", "name", "tags", "type", "vertices", "area km²", "min inside", "min outside"):
        table.add_column(column, justify="right" if column in ("vertices", "area km²") else "left")
    defaults = stack.config.geofences
    for row in rows:
        inside = row["min_inside_s"] if row["min_inside_s"] is not None else defaults.min_inside_s
        outside = row["min_outside_s"] if row["min_outside_s"] is not None else defaults.min_outside_s
        table.add_row(row["id"], row["name"], ", ".join(row["tags"]), row["type"], str(row["vertices"]),
                      f"{row['area_km2']:.3f}", f"{inside:g}s", f"{outside:g}s")
    out.print(table)


@geofences_app.command("import")
def import_geofences(
    file: Annotated[str, typer.Argument(help="a GeoJSON FeatureCollection or Feature; - reads stdin")],
    replace: Annotated[bool, typer.Option("--replace", help="the file becomes the whole set (others are removed)")]
    = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and show what would change, write nothing")]
    = False,
    as_json: JsonOption = False, output: OutputOption = None, config: ConfigOption = None,
    profile: ProfileOption = None, debug: DebugOption = False,
) -> None:
    """Add (or replace, by id) geofences from FILE; the result is validated as a whole and
    written atomically, and the running processor picks it up without a restart."""
    stack = load_stack(config, profile)
    store = stack.geofence_store()
    if file == "-":
        from ecokit.geofence.model import load_json

        result = store.import_features(load_json(sys.stdin.buffer.read(), source="stdin"), source="stdin",
                                       replace=replace, dry_run=dry_run)
    else:
        result = store.import_file(Path(file), replace=replace, dry_run=dry_run, label=file)
    delivered = None
    if not dry_run and (result.added or result.updated or result.removed):
        delivered = _deliver(stack)
    emit({"file": store.label, "added": list(result.added), "updated": list(result.updated),
          "unchanged": list(result.unchanged), "removed": list(result.removed), "total": result.total,
          "dry_run": dry_run, "warnings": list(result.warnings), "processor": delivered},
         as_json=as_json, output=output)
    _warn(result.warnings)
    if as_json:
        return
    verb = "would change" if dry_run else "changed"
    parts = [f"{len(result.added)} added", f"{len(result.updated)} updated", f"{len(result.unchanged)} unchanged"]
    if replace:
        parts.append(f"{len(result.removed)} removed")
    out.print(f"[green]{store.label}[/green] {verb}: {', '.join(parts)}; {result.total} geofence(s) in all")
    for title, ids in (("added", result.added), ("updated", result.updated), ("removed", result.removed)):
        if ids:
            out.print(f"  {title}: {', '.join(ids[:20])}" + (f" … (+{len(ids) - 20})" if len(ids) > 20 else ""))
    if delivered:
        out.print(f"  {delivered}")


def _deliver(stack: Stack) -> str | None:
    """Bring the change to a running processor: locally it watches the file itself; a
    container gets the new copy and a SIGHUP through `up` (nothing restarts)."""
    runtime = stack.current_runtime()
    if runtime is None or not stack.runtime(runtime).is_up():
        return None
    if runtime == "local":
        return f"the processor reloads it within {stack.config.geofences.reload_interval:g}s"
    stack.up(runtime)
    return "delivered to the running processor"


@geofences_app.command("export")
def export_geofences(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout",
                                                dir_okay=False)] = None,
    config: ConfigOption = None, profile: ProfileOption = None, debug: DebugOption = False,
) -> None:
    """The geofences as one GeoJSON FeatureCollection (validated; [longitude, latitude])."""
    stack = load_stack(config, profile)
    data = stack.geofences().dumps()
    if output is None:
        sys.stdout.write(data.decode())
        sys.stdout.flush()
        return
    output.write_bytes(data)
    err.print(f"wrote {output}")
