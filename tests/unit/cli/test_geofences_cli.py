"""`ecokit geofences list | import | export` and `ecokit query --daily`'s usage errors."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ecokit.testing import write_project

CliRunner = Callable[..., tuple[int, str, str]]  # the `cli` fixture (conftest.py)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj")


def zone(fid: str, x0: float = 2.30, **props: Any) -> dict[str, Any]:
    ring = [[x0, 48.86], [x0 + 0.02, 48.86], [x0 + 0.02, 48.87], [x0, 48.87], [x0, 48.86]]
    return {"type": "Feature", "id": fid, "properties": {"name": fid.title(), **props},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}


def write(path: Path, *features: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}))
    return path


def test_list_import_export_round_trip(cli: CliRunner, project: Path, tmp_path: Path) -> None:
    code, out, _ = cli("geofences", "list", "-c", str(project))
    assert code == 0
    assert "no geofences in config/geofences.geojson (no such file yet)" in out
    zones = write(tmp_path / "zones.geojson", zone("depot", tags=["depot"], min_inside_s=30), zone("yard", 2.4))
    code, out, _ = cli("geofences", "import", str(zones), "-c", str(project))
    assert (code, "config/geofences.geojson changed: 2 added, 0 updated, 0 unchanged; 2 geofence(s) in all") == (
        0, out.splitlines()[0])
    code, out, _ = cli("geofences", "list", "--json", "-c", str(project))
    doc = json.loads(out)
    assert (doc["file"], doc["exists"], doc["warnings"]) == ("config/geofences.geojson", True, [])
    rows = doc["geofences"]
    assert [(r["id"], r["tags"], r["min_inside_s"]) for r in rows] == [("depot", ["depot"], 30), ("yard", [], None)]
    code, out, _ = cli("geofences", "export", "-c", str(project))
    exported = json.loads(out)
    assert [f["id"] for f in exported["features"]] == ["depot", "yard"]
    assert exported == json.loads((project.parent / "config" / "geofences.geojson").read_text())
    target = tmp_path / "out.geojson"
    assert cli("geofences", "export", "-o", str(target), "-c", str(project))[0] == 0
    assert json.loads(target.read_text()) == exported


def test_import_replace_dry_run_and_stdin(cli: CliRunner, project: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cli("geofences", "import", str(write(tmp_path / "a.geojson", zone("a"), zone("b", 2.4))),
        "-c", str(project))
    code, out, _ = cli("geofences", "import", str(write(tmp_path / "c.geojson", zone("c"))), "--replace",
                       "--dry-run", "-c", str(project))
    assert code == 0
    assert "would change: 1 added, 0 updated, 0 unchanged, 2 removed; 1 geofence(s) in all" in out
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(json.dumps(zone("b", 2.5)).encode())))
    code, out, _ = cli("geofences", "import", "-", "--json", "-c", str(project))
    result = json.loads(out)
    assert (code, result["updated"], result["total"], result["processor"]) == (0, ["b"], 2, None)


def test_an_invalid_import_is_one_red_error_listing_every_problem(cli: CliRunner,
                                                                   project: Path, tmp_path: Path) -> None:
    good = write(tmp_path / "good.geojson", zone("a"))
    cli("geofences", "import", str(good), "-c", str(project))
    before = (project.parent / "config" / "geofences.geojson").read_bytes()
    broken = zone("b")
    broken["geometry"]["coordinates"][0].pop()
    bad = write(tmp_path / "bad.geojson", broken, zone("a"), zone("a"))
    code, _, err = cli("geofences", "import", str(bad), "-c", str(project))
    assert code == 1
    assert "Traceback" not in err
    assert f"Error: {bad}: 2 problems:" in err
    assert 'feature #1 (id "b", "B"): ring 0 (outer) is not closed: it starts at [2.3, 48.86]' in err
    assert 'feature #3 (id "a", "A"): duplicate id' in err
    assert "hint: GeoJSON positions are [longitude, latitude]" in err  # brackets are not markup
    assert (project.parent / "config" / "geofences.geojson").read_bytes() == before
    assert cli("geofences", "import", str(tmp_path / "none.geojson"), "-c", str(project))[0] == 1


def test_a_hand_broken_file_fails_list_and_render_but_not_status(cli: CliRunner,
                                                               project: Path) -> None:
    write(project.parent / "config" / "geofences.geojson", zone("a"), zone("a"))
    code, _, err = cli("geofences", "list", "-c", str(project))
    assert code == 1
    assert "config/geofences.geojson: 1 problem:" in err
    code, _, err = cli("render", "-c", str(project))
    assert code == 1
    assert "duplicate id 'a'" in err
    # Everything else goes on (with what the processor last got) and says so.
    code, out, err = cli("status", "-c", str(project))
    assert code == 0
    assert "config/geofences.geojson is invalid (1 problem(s)); the processor keeps its last valid" in out + err


def test_swapped_coordinates_near_the_region_warn(cli: CliRunner, project: Path,
                                                  tmp_path: Path) -> None:
    swapped = zone("oops")
    swapped["geometry"]["coordinates"] = [[[lat, lng] for lng, lat in swapped["geometry"]["coordinates"][0]]]
    code, _, err = cli("geofences", "import", str(write(tmp_path / "s.geojson", swapped)),
                       "-c", str(project))
    assert code == 0
    assert "warning: geofence 'oops' lies far from the simulated region" in err


@pytest.mark.parametrize("args", [["query", "--refresh"], ["query", "SELECT 1", "--daily"]])
def test_query_daily_usage_errors(cli: CliRunner, project: Path, args: list[str]) -> None:
    code, _, err = cli(*args, "-c", str(project))
    assert code == 2
    assert "--daily" in err
