"""Disk space warnings (`ecokit status`, `ecokit doctor`): nearly full and full, per filesystem."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import pytest

import ecokit.disk as disk
from ecokit.disk import DiskSpace, disk_spaces, level

GiB = 1 << 30
Usage = namedtuple("Usage", "total used free")


@pytest.mark.parametrize(("total", "free", "expected"), [
    (500 * GiB, 100 * GiB, "ok"),
    (500 * GiB, 40 * GiB, "low"),     # under a tenth
    (8 * GiB, 900 << 20, "low"),      # under 1 GiB
    (500 * GiB, 4 * GiB, "full"),     # under 1 %
    (500 * GiB, 2 * GiB, "full"),
    (4 * GiB, 60 << 20, "full"),      # under 64 MiB
    (1 << 20, 0, "full"),
])
def test_levels(total: int, free: int, expected: str) -> None:
    assert level(total, free) == expected


def test_folders_on_one_filesystem_are_one_line_naming_what_is_there(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "influxdb").mkdir()
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: Usage(100 * GiB, 95 * GiB, 5 * GiB))
    (space,) = disk_spaces({"influxdb": tmp_path / "influxdb", "bridge spool": tmp_path / "bridge" / "spool"})
    assert space.uses == ("influxdb", "bridge spool")
    assert space.path == tmp_path / "influxdb"
    assert space.level == "low"
    note = space.note()
    assert note is not None
    assert note.startswith("disk is nearly full: 5.0 GiB free of 100.0 GiB (5%)")
    assert "disk_error" in note


def test_room_gives_no_note() -> None:
    assert DiskSpace(Path("/"), ("logs",), 100 * GiB, 50 * GiB).note() is None


def test_status_and_doctor_report_a_nearly_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ecokit.doctor import check_disk
    from ecokit.stack import Stack
    from ecokit.status import stack_status
    from ecokit.testing import write_project

    project = write_project(tmp_path)
    stack = Stack.load(project)
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: Usage(100 * GiB, 99 * GiB, 512 << 20))
    status = stack_status(stack)
    assert any(n.startswith("disk is full") for n in status.notes)
    assert status.to_dict()["disk"][0]["level"] == "full"
    assert "influxdb" in status.to_dict()["disk"][0]["uses"]
    (check,) = check_disk(stack, "local")
    assert (check.area, check.level) == ("disk", "fail")
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: Usage(100 * GiB, 50 * GiB, 50 * GiB))
    assert [c.level for c in check_disk(stack, "local")] == ["ok"]
    assert not [n for n in stack_status(stack).notes if n.startswith("disk")]
