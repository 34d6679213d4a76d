"""The docker test lane's pure parts: where debootstrap fetches from, how users get fixed ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecokit.errors import RuntimeUnavailable
from ecokit.testing.docker_lane import _set_ids, debian_mirror


def test_the_mirror_comes_from_deb822_sources_skipping_security(tmp_path: Path) -> None:
    folder = tmp_path / "sources.list.d"
    folder.mkdir()
    (folder / "a-security.sources").write_text("Types: deb\nURIs: http://mirror.test/debian-security\n")
    (folder / "debian.sources").write_text("Types: deb\n# comment\nURIs: http://mirror.test/debian\nSuites: bookworm\n")
    assert debian_mirror([folder]) == "http://mirror.test/debian"


def test_the_mirror_comes_from_a_one_line_list(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list"
    sources.write_text("# deb http://old.test/debian bookworm main\n"
                       "deb [arch=amd64] http://mirror.test/debian bookworm main\n")
    assert debian_mirror([tmp_path / "missing.d", sources]) == "http://mirror.test/debian"


def test_no_mirror_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeUnavailable, match="no Debian mirror"):
        debian_mirror([tmp_path])


def test_a_system_user_gets_the_upstream_image_uid(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                     "mosquitto:x:101:102::/var/lib/mosquitto:/usr/sbin/nologin\n")
    (tmp_path / "group").write_text("root:x:0:\nmosquitto:x:102:\n")
    _set_ids(tmp_path, "mosquitto", 1883)
    assert "mosquitto:x:1883:1883::/var/lib/mosquitto:/usr/sbin/nologin" in (tmp_path / "passwd").read_text()
    assert (tmp_path / "group").read_text().splitlines() == ["root:x:0:", "mosquitto:x:1883:"]
