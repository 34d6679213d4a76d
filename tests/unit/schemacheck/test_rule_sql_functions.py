"""Rule SQL functions against EMQX 5.8.9's exports, by name and arity: the list shipped in
the package, the SQL reader, and the check `ecokit render` runs on every rule."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from schema_support import EMQX

from ecokit.cli import main
from ecokit.errors import ConfigError
from ecokit.rules import sqlfuncs
from ecokit.rules.emqx import render_rules
from ecokit.rules.sqlfuncs import (
    SqlSyntaxError,
    check_rule_sql,
    exported_functions,
    function_calls,
    unknown_calls,
)
from ecokit.stack import Stack
from ecokit.testing import write_project


def exports_of_source(source: str) -> set[tuple[str, int]]:
    """The -export lists of an Erlang module."""
    found: set[tuple[str, int]] = set()
    for block in re.findall(r"^-export\(\[(.*?)\]\)\.", source, re.S | re.M):
        block = re.sub(r"%[^\n]*", "", block)
        for name, arity in re.findall(r"('[^']+'|[a-z][A-Za-z0-9_]*)/(\d+)", block):
            found.add((name.strip("'"), int(arity)))
    return found


def test_shipped_exports_are_those_of_emqx_rule_funcs_at_5_8_9() -> None:
    assert exported_functions() == exports_of_source((EMQX / "emqx_rule_funcs.erl").read_text())
    assert ("map_get", 2) in exported_functions()
    assert ("regex_match", 2) in exported_functions()


def test_shipped_exports_are_package_data() -> None:
    # `ecokit render` needs them in an installed wheel: they live beside the module.
    assert (Path(sqlfuncs.__file__).parent / sqlfuncs.EXPORTS_FILE).is_file()


@pytest.mark.parametrize(("sql", "calls"), [
    ("SELECT payload FROM \"t/#\"", []),
    ("SELECT now_timestamp() AS t FROM \"t/#\"", ["now_timestamp/0"]),
    ("SELECT nth(2, split(topic, '/', 'notrim')) AS v FROM \"a/+\"", ["nth/2", "split/3"]),
    ("SELECT sprintf('%s,%s', a, b) AS s FROM \"t\" WHERE NOT (a = 1) AND b IN (1, 2)", ["sprintf/3"]),
    ("SELECT CASE WHEN is_null(map_get('x', payload)) THEN 'a,(b' ELSE str(1) END AS c FROM \"t\"",
     ["is_null/1", "map_get/2", "str/1"]),
    ("SELECT replace(x, '\\,', '\\\\,') FROM \"t\"", ["replace/3"]),
    ("SELECT subbits(hexstr2bin(id), 1, 64) * 1000 + mod(subbits(hexstr2bin(id), 113, 16), 1000) AS ts FROM \"#\"",
     ["subbits/3", "hexstr2bin/1", "mod/2", "subbits/3", "hexstr2bin/1"]),
])
def test_function_calls_are_read_with_their_arity(sql: str, calls: list[str]) -> None:
    assert sorted(str(c) for c in function_calls(sql)) == sorted(calls)


def test_an_unclosed_call_is_a_syntax_error() -> None:
    with pytest.raises(SqlSyntaxError, match="never closed"):
        function_calls("SELECT nth(1, split(topic, '/') FROM \"t\"")


@pytest.mark.parametrize(("sql", "bad"), [
    ("SELECT geo_distance(a, b) FROM \"t\"", ["geo_distance/2"]),
    ("SELECT nth(1) FROM \"t\"", ["nth/1"]),
    ("SELECT map_get('a', payload, 1, 2) FROM \"t\"", ["map_get/4"]),
    ("SELECT sprintf() FROM \"t\"", ["sprintf/0"]),
    ("SELECT Is_Null(x) FROM \"t\"", ["Is_Null/1"]),
])
def test_unknown_functions_and_arities_are_found(sql: str, bad: list[str]) -> None:
    assert [str(c) for c in unknown_calls(sql)] == bad


def test_every_function_ecokit_renders_is_exported() -> None:
    # All rule kinds at once: the matrix in test_emqx_conf_schema.py renders them in context.
    from schema_support import CUSTOM_RULES

    from ecokit.config.model import StackConfig

    config = StackConfig.model_validate({"rules": CUSTOM_RULES})
    for rule in render_rules(config.rules, database="fleet"):
        assert unknown_calls(rule.sql()) == [], rule.id


def test_check_names_the_rule_and_the_function() -> None:
    with pytest.raises(ConfigError) as info:
        check_rule_sql("engine", "ecokit_engine", "SELECT geo_distance(a, b), nth(1) FROM \"t\"")
    text = str(info.value)
    assert text.startswith("rules.engine: ")
    assert "ecokit_engine" in text
    assert "geo_distance/2 (EMQX 5.8.9's rule engine has no function geo_distance)" in text
    assert "nth/1 (EMQX 5.8.9 has nth with 2 argument(s))" in text


@pytest.fixture
def emqx_without(monkeypatch: pytest.MonkeyPatch) -> None:
    """An EMQX whose rule engine lacks str/1, which only a boolean where-condition renders."""
    reduced = exported_functions() - {("str", 1)}
    monkeypatch.setattr(sqlfuncs, "exported_functions", lambda: reduced)


def test_render_refuses_a_user_rule_calling_a_function_emqx_lacks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        emqx_without: None) -> None:
    for name in list(os.environ):
        if name.startswith("ECOKIT_"):
            monkeypatch.delenv(name)
    # As on a machine with EMQX installed: the local runtime renders EMQX (nothing is started).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "emqx").write_text("#!/bin/sh\nexit 1\n")
    (bindir / "emqx").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    rules = {"engine": {"topic": "plant/+/engine", "measurement": "engine", "fields": {"rpm": {"type": "int"}},
                        "where": [{"path": "running", "op": "eq", "value": True}]}}
    config = write_project(tmp_path / "proj", extra={"broker": {"kind": "emqx"}, "rules": rules})
    code = main(["render", "--config", str(config), "--runtime", "local"])
    err = capsys.readouterr().err
    assert code == 1
    assert "rules.engine" in err
    assert "str/1" in err
    assert "Traceback" not in err
    assert not (tmp_path / "proj" / ".ecokit").exists() or not list((tmp_path / "proj" / ".ecokit").rglob("emqx.conf"))


def test_render_keeps_working_for_mosquitto_stacks(tmp_path: Path, emqx_without: None) -> None:
    # The ecokit bridge evaluates rules itself; EMQX's functions do not matter there.
    rules = {"engine": {"topic": "plant/+/engine", "measurement": "engine", "fields": {"rpm": {"type": "int"}},
                        "where": [{"path": "running", "op": "eq", "value": True}]}}
    stack = Stack.load(write_project(tmp_path / "proj", extra={"rules": rules}), env={})
    assert stack.render("local")
