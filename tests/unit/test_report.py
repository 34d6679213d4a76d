"""ecokit.report: the JSON and time conventions every command's report follows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from ecokit.report import iso_from_ms, iso_from_ns, iso_utc, stamped, stamped_ns, to_json, write_json


def test_times_are_iso_8601_utc_to_the_millisecond() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1738324800.1234) == "2025-01-31T12:00:00.123Z"
    assert iso_from_ns(1738324800_123_456_789) == "2025-01-31T12:00:00.123Z"
    assert iso_from_ms(1738324800_123) == "2025-01-31T12:00:00.123Z"
    assert iso_utc(None) is None
    assert iso_from_ns(None) is None


def test_raw_values_sit_beside_the_iso_time() -> None:
    assert stamped("started_at", 1738324800.5) == {"started_at": "2025-01-31T12:00:00.500Z",
                                                   "started_at_epoch": 1738324800.5}
    assert stamped_ns("time", 1738324800_000_000_001) == {"time": "2025-01-31T12:00:00.000Z",
                                                         "time_ns": 1738324800_000_000_001}
    assert stamped("x", None) == {"x": None, "x_epoch": None}


def test_documents_serialise_library_values(tmp_path: Path) -> None:
    when = dt.datetime(2025, 1, 31, 12, 0, tzinfo=dt.UTC)
    doc = {"path": tmp_path, "when": when, "ids": {"b", "a"}, "pair": (1, 2), 3: "int key"}
    text = to_json(doc)
    assert text.endswith("\n")
    assert json.loads(text) == {"path": str(tmp_path), "when": "2025-01-31T12:00:00.000Z", "ids": ["a", "b"],
                                "pair": [1, 2], "3": "int key"}
    target = write_json(tmp_path / "deeper" / "report.json", doc)
    assert json.loads(target.read_text()) == json.loads(text)
    assert [p.name for p in target.parent.iterdir()] == ["report.json"], "no temporary file left behind"
