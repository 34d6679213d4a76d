"""Rebuild tests/data/schemas from the upstream copies it was made from.

    python tests/data/schemas/derive.py /path/to/reference/schemas

The folder given holds the upstream files as README.md here lists them (source, commit,
licence). Apache-2.0 and MIT files are copied as they are; the rest is reduced to what
the tests read (README.md says what and why). Output is deterministic: running this
again over the same inputs changes nothing, so `git diff` shows any upstream change.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
PROSE = {"description", "summary", "example", "examples", "externalDocs"}

EMQX_API_PATHS = {"/connectors": ["post"], "/actions": ["post"], "/rules": ["post"], "/authentication": ["post"],
                  "/authorization/settings": ["put"], "/authorization/sources": ["post"]}
EMQX_API_COMPONENTS = ["bridge_http.post_connector", "bridge_http.post_bridge_v2", "authn.builtin_db",
                       "authz.api_file", "emqx.authz_cache", "rule_engine.rule_creation",
                       "listeners.tcp_required_bind", "listeners.ssl_required_bind", "listeners.ws_required_bind",
                       "listeners.wss_required_bind"]
INFLUX_PATHS = {"/setup": ["post"], "/dbrps": ["get", "post"], "/health": ["get"], "/tasks": ["get", "post"],
                "/tasks/{taskID}": ["patch", "delete"], "/query": ["post"]}
GRAFANA_SCHEMAS = ["dashboard", "geomap", "timeseries", "stat", "table", "prometheus"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def without_prose(node: Any, *, in_properties: bool = False) -> Any:
    """OpenAPI/JSON Schema without descriptions and examples (property names stay)."""
    if isinstance(node, dict):
        return {k: without_prose(v, in_properties=(k == "properties" and not in_properties))
                for k, v in node.items() if in_properties or k not in PROSE}
    if isinstance(node, list):
        return [without_prose(v) for v in node]
    return node


def refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            found.add(ref)
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def openapi_subset(doc: dict[str, Any], paths: dict[str, list[str]], components: list[str]) -> dict[str, Any]:
    """The named operations and schemas, and every component they refer to."""
    out: dict[str, Any] = {k: doc[k] for k in ("openapi", "info", "servers") if k in doc}
    out["paths"] = {p: {m: doc["paths"][p][m] for m in methods} for p, methods in paths.items()}
    wanted = {f"#/components/schemas/{c}" for c in components} | refs(out["paths"])
    done: set[str] = set()
    comps: dict[str, dict[str, Any]] = {}
    while wanted - done:
        ref = sorted(wanted - done)[0]
        done.add(ref)
        _, _, section, name = ref.split("/", 3)
        node = doc["components"][section][name]
        comps.setdefault(section, {})[name] = node
        wanted |= refs(node)
    schemes = {name for req in doc.get("security", []) for name in req}
    schemes |= {name for item in out["paths"].values() for op in item.values() for req in op.get("security", [])
                for name in req}
    if schemes:
        comps["securitySchemes"] = {n: doc["components"]["securitySchemes"][n] for n in schemes}
    out["components"] = {s: dict(sorted(v.items())) for s, v in sorted(comps.items())}
    if "security" in doc:
        out["security"] = doc["security"]
    result: dict[str, Any] = without_prose(out)
    return result


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=False, ensure_ascii=False) + "\n")


def copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def strip_doc(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_doc(v) for k, v in node.items() if k != "doc"}
    if isinstance(node, list):
        return [strip_doc(v) for v in node]
    return node


def influx_entrypoint_facts(script: str, dockerfile: str) -> dict[str, Any]:
    """What the influxdb:2.7 entrypoint reads and requires, as data."""
    required = re.search(r"REQUIRED_INIT_VARS=\(([^)]*)\)", script)
    assert required is not None
    setup = re.search(r"function setup_influxd \(\) \{(.*?)\n\}", script, re.S)
    assert setup is not None
    flags = dict(re.findall(r'(--[a-z-]+) "\$\{(DOCKER_INFLUXDB_INIT_[A-Z_]+)\}"', setup.group(1)))
    modes = re.search(r'"\$\{DOCKER_INFLUXDB_INIT_MODE\}" != (\w+) && "\$\{DOCKER_INFLUXDB_INIT_MODE\}" != (\w+)',
                      script)
    assert modes is not None
    file_vars = re.findall(r'if \[ -n "\$\{(DOCKER_INFLUXDB_INIT_\w+_FILE)\}" \]', script)
    exported = re.findall(r"export (DOCKER_INFLUXDB_INIT_\w+(?: DOCKER_INFLUXDB_INIT_\w+)*)", script)
    read = sorted(set(re.findall(r"\$\{?(DOCKER_INFLUXDB_INIT_[A-Z0-9_]+)", script)))
    env = dict(re.findall(r"^ENV (\w+) (\S+)$", dockerfile, re.M))
    return {
        "read": read,
        "required": required.group(1).split(),
        "file_variants": file_vars,
        "modes": [modes.group(1), modes.group(2)],
        "setup_flags": {var: flag for flag, var in flags.items()},
        "set_by_entrypoint": sorted({v for group in exported for v in group.split()}),
        "influxd_env_read": sorted(set(re.findall(r"\$\{?(INFLUXD_[A-Z_]+)", script))),
        "image_env": {k: v for k, v in env.items() if k.startswith(("INFLUX", "DOCKER_INFLUXDB"))},
    }


def main(reference: Path) -> None:
    emqx, influx, grafana = HERE / "emqx", HERE / "influxdb", HERE / "grafana"
    apache = Path("/usr/share/common-licenses/Apache-2.0")
    dump = reference / "emqx-hocon-schema-5.8.1/hocon-ce-v5.8.1-en.json"
    write_json(emqx / "hocon-ce-v5.8.1.schema.json", strip_doc(json.loads(dump.read_text())))
    api = reference / "emqx-api-openapi-5.8.1/ce-en.json"
    write_json(emqx / "ce-5.8.1.openapi.json",
               openapi_subset(json.loads(api.read_text()), EMQX_API_PATHS, EMQX_API_COMPONENTS))
    copy(reference / "emqx-rule-engine-schema/emqx_rule_engine_schema.erl", emqx / "emqx_rule_engine_schema.erl")
    copy(reference / "emqx-rule-funcs/emqx_rule_funcs.erl", emqx / "emqx_rule_funcs.erl")
    copy(reference / "emqx-docker-entrypoint/docker-entrypoint.sh", emqx / "docker-entrypoint.sh")
    copy(reference / "emqx-docker-entrypoint/bin-emqx", emqx / "bin-emqx")
    copy(apache, emqx / "LICENSE")

    oss = reference / "influxdb-openapi-2.7/oss.yml"
    write_json(influx / "oss-2.7.subset.openapi.json",
               openapi_subset(yaml.safe_load(oss.read_text()), INFLUX_PATHS, []))
    copy(reference / "influxdb-openapi-2.7/swaggerV1Compat.yml", influx / "swaggerV1Compat.yml")
    copy(reference / "influxdb-openapi-2.7/LICENSE", influx / "LICENSE")
    entry = reference / "influxdb-docker-2.7"
    write_json(influx / "docker-entrypoint-facts.json",
               influx_entrypoint_facts((entry / "entrypoint.sh").read_text(), (entry / "Dockerfile").read_text()))

    sdk = reference / "grafana-foundation-sdk-jsonschema"
    for name in GRAFANA_SCHEMAS:
        copy(sdk / f"{name}.jsonschema.json", grafana / f"{name}.jsonschema.json")
    copy(sdk / "LICENSE", grafana / "LICENSE")

    sums = {str(p.relative_to(reference)): sha256(p) for p in
            [dump, api, oss, entry / "entrypoint.sh", entry / "Dockerfile"]}
    write_json(HERE / "upstream-sha256.json", sums)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
