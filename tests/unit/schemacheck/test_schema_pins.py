"""The docker runtime's images stay pinned to the versions the schemas come from, or
docs/schemas.md names the difference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from schema_support import EMQX, GRAFANA, INFLUX, SCHEMAS

from ecokit.config.model import ImagesConfig
from ecokit.schemacheck.influx import EntrypointFacts

DOC = (Path(__file__).resolve().parents[3] / "docs" / "schemas.md").read_text()
IMAGES = ImagesConfig()


def tag(image: str) -> str:
    return image.rsplit(":", 1)[1]


def test_emqx_pin_and_schema_versions_are_named() -> None:
    api_version = json.loads((EMQX / "ce-5.8.1.openapi.json").read_text())["info"]["version"]
    assert api_version == "5.8.1"
    funcs = (Path(__file__).resolve().parents[3] / "ecokit" / "rules" / "emqx_rule_funcs_v5.8.9.txt").read_text()
    assert "tag v5.8.9" in funcs
    assert tag(IMAGES.emqx) == "5.8.9", "a new EMQX pin needs the 5.8.9 sources (rule functions, entrypoint)"
    for text in (f"`{IMAGES.emqx}`", api_version, "v5.8.9"):
        assert text in DOC, text


def test_influxdb_pin_is_the_version_of_the_entrypoint_checked() -> None:
    facts = EntrypointFacts.load(INFLUX / "docker-entrypoint-facts.json")
    assert tag(IMAGES.influxdb) == facts.image_env["INFLUXDB_VERSION"]
    for text in (f"`{IMAGES.influxdb}`", "influxdb-oss-v2.7.0"):
        assert text in DOC, text


def test_grafana_pin_and_schema_versions_are_named() -> None:
    assert tag(IMAGES.grafana).startswith("12.4."), "docs/schemas.md compares the 12.4 line with the schemas"
    for text in (f"`{IMAGES.grafana}`", "v12.3.3", "v11.6"):
        assert text in DOC, text
    assert (GRAFANA / "dashboard.jsonschema.json").is_file()


@pytest.mark.parametrize("image", [IMAGES.prometheus, IMAGES.mosquitto])
def test_images_without_a_schema_are_named(image: str) -> None:
    assert f"`{image}`" in DOC


def test_every_vendored_file_is_accounted_for() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    for path in sorted(p for p in SCHEMAS.rglob("*") if p.is_file()):
        name = path.relative_to(SCHEMAS).as_posix()
        if name in ("README.md", "derive.py", "upstream-sha256.json") or path.name == "LICENSE":
            continue
        assert f"`{name}`" in readme, f"{name} has no source/licence line in tests/data/schemas/README.md"
