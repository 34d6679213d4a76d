"""What a user gets from `pip install ecokit`: the wheel built from this tree, installed into
a fresh virtualenv (its dependencies borrowed from this one), used as a new user would."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (found,) = out.glob("ecokit-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel; dependencies come from this environment's
    site-packages through a .pth line (its editable ecokit is not picked up: .pth files in
    a folder added that way are not processed)."""
    env = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    entry_points = next(Path(site).glob("ecokit-*.dist-info/entry_points.txt")).read_text()
    assert "[pytest11]" in entry_points
    return env


def run(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """In ``cwd``, away from this checkout (python puts the current folder first on sys.path)."""
    return subprocess.run([str(env / "bin" / "python"), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={"PATH": f"{env / 'bin'}:/usr/bin:/bin", "HOME": str(env)})


def test_the_wheel_ships_plugin_conformance_and_data_but_no_dev_tools(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for wanted in ("ecokit/pytest_plugin.py", "ecokit/conformance/checks.py",
                   "ecokit/conformance/test_mqtt_conformance.py", "ecokit/_data/dashboards/broker.json",
                   "ecokit/_data/profiles/open.yaml", "ecokit/brokerstats/service.py"):
        assert wanted in names, wanted
    assert "ecokit/dashboards.py" not in names, "the dashboard generator is a development tool"
    assert not [n for n in names if n.startswith("ecokit/schemacheck/")], "so is the schema checker"
    assert not [n for n in names if n.startswith("tests/")]


def test_an_installed_ecokit_brings_its_pytest_plugin_and_conformance_suite(installed: Path,
                                                                           tmp_path: Path) -> None:
    version = run(installed, "-m", "ecokit", "--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("ecokit ")
    where = run(installed, "-c", "import ecokit, sys; print(ecokit.__file__)", cwd=tmp_path)
    assert str(installed) in where.stdout, "the wheel's ecokit, not this checkout's"
    helped = run(installed, "-m", "pytest", "--help", cwd=tmp_path)
    assert "--broker=URL" in helped.stdout
    collected = run(installed, "-m", "pytest", "--pyargs", "ecokit.conformance", "--collect-only", "-q",
                    "-p", "no:cacheprovider", cwd=tmp_path)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "53 tests collected" in collected.stdout
    missing = run(installed, "-c", "import ecokit.dashboards", cwd=tmp_path)
    assert "ModuleNotFoundError" in missing.stderr
