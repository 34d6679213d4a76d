"""What EMQX's configuration dump leaves out, and where the walker takes it from instead:
the rule engine's Erlang schema source, and the hidden fields listed with their source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from schema_support import EMQX

from ecokit.schemacheck.emqx_schema import HIDDEN_KEYS, NUMBERS_AS_STRINGS, EmqxSchema
from ecokit.schemacheck.erlang_schema import ErlangSchemaError, SchemaModule, tokenize
from ecokit.schemacheck.hocon import Literal, MapOf, Selector, String, Struct
from ecokit.schemacheck.openapi import OpenApi

RULE_ENGINE_ERL = EMQX / "emqx_rule_engine_schema.erl"


@pytest.fixture(scope="module")
def dump_only() -> EmqxSchema:
    return EmqxSchema.load(EMQX / "hocon-ce-v5.8.1.schema.json")


def test_the_dump_lacks_the_rule_engine_root_so_it_comes_from_the_source(dump_only: EmqxSchema,
                                                                         emqx_schema: EmqxSchema) -> None:
    assert "rule_engine" not in dump_only.root.fields
    root = emqx_schema.root.fields["rule_engine"].type
    assert isinstance(root, Struct)
    assert set(root.fields) == {"ignore_sys_message", "jq_function_default_timeout", "jq_implementation_module",
                                "rules"}
    rules = root.fields["rules"].type
    assert isinstance(rules, MapOf)
    assert isinstance(rules.value, Struct)
    assert set(rules.value.fields) == {"name", "sql", "actions", "enable", "description", "metadata"}
    assert rules.value.fields["sql"].required


def test_rule_fields_read_from_the_source_match_the_rest_api(emqx_schema: EmqxSchema,
                                                             emqx_api_as_written: OpenApi) -> None:
    # Two independent readings of the same Erlang schema: ours of the source, EMQX's generator's.
    rules = emqx_schema.root.fields["rule_engine"].type.fields["rules"].type.value  # type: ignore[attr-defined]
    api = emqx_api_as_written.component("rule_engine.rule_creation")
    assert set(rules.fields) == set(api["properties"])
    republish = emqx_api_as_written.component("rule_engine.republish_args")
    actions = rules.fields["actions"].type.item
    assert isinstance(actions, Selector)
    args = actions.pick({"function": "republish"}).fields["args"].type  # type: ignore[union-attr]
    assert set(args.fields) == set(republish["properties"])
    assert {n for n, f in args.fields.items() if f.required} == set(republish["required"])


@pytest.mark.parametrize(("value", "member"), [
    ("http:influx_write", "String"), ({"function": "republish", "args": {"topic": "t"}}, "builtin_action_republish"),
    ({"function": "console"}, "builtin_action_console"), ({"function": "mod:fun"}, "user_provided_function"),
    (42, None), ({"args": {}}, None),
])
def test_rule_actions_pick_their_member_as_the_source_selector_does(emqx_schema: EmqxSchema, value: object,
                                                                   member: str | None) -> None:
    rules = emqx_schema.root.fields["rule_engine"].type.fields["rules"].type.value  # type: ignore[attr-defined]
    picked = rules.fields["actions"].type.item.pick(value)
    if member is None:
        assert picked is None
    elif member == "String":
        assert isinstance(picked, String)
    else:
        assert isinstance(picked, Struct)
        assert picked.name == member


def test_an_unknown_construct_in_the_source_fails_loudly(tmp_path: Path) -> None:
    source = RULE_ENGINE_ERL.read_text().replace("emqx_schema:template()", "emqx_schema:brand_new_type()", 1)
    changed = tmp_path / "emqx_rule_engine_schema.erl"
    changed.write_text(source)
    with pytest.raises(ErlangSchemaError, match=r"line \d+: unknown call emqx_schema:brand_new_type/0"):
        SchemaModule.load(changed).roots()


def test_erlang_tokens_cover_the_whole_source() -> None:
    tokens = tokenize(RULE_ENGINE_ERL.read_text())
    assert tokens[-1].kind == "eof"
    with pytest.raises(ErlangSchemaError, match="cannot read"):
        tokenize("fields(x) -> ` .")


@pytest.mark.parametrize("hidden", HIDDEN_KEYS, ids=lambda h: f"{h.struct}.{h.name}")
def test_each_hidden_key_is_missing_from_the_dump_where_it_is_listed(dump_only: EmqxSchema, hidden: object) -> None:
    structs = [s for s in dump_only.structs() if re.fullmatch(hidden.struct, s.ident)]  # type: ignore[attr-defined]
    assert structs, "the pattern matches no struct of the dump: the entry is stale"
    for struct in structs:
        assert hidden.name not in struct.fields, f"{struct.ident} lists {hidden.name}: drop the entry"  # type: ignore[attr-defined]


@pytest.mark.parametrize("hidden", [h for h in HIDDEN_KEYS if h.openapi], ids=lambda h: f"{h.struct}.{h.name}")
def test_hidden_keys_are_fields_emqx_rest_api_documents(emqx_api_as_written: OpenApi, hidden: object) -> None:
    expected = {"Boolean": "boolean", "String": "string"}[hidden.type]  # type: ignore[attr-defined]
    for component in hidden.openapi:  # type: ignore[attr-defined]
        prop = emqx_api_as_written.component(component)["properties"].get(hidden.name)  # type: ignore[attr-defined]
        assert prop is not None, f"{component} has no {hidden.name}"  # type: ignore[attr-defined]
        assert prop.get("type") == expected, (component, prop)


def test_hidden_keys_are_accepted_only_where_listed(emqx_schema: EmqxSchema) -> None:
    assert emqx_schema.field_at(["listeners", "tcp", "default", "enable"]) is not None
    assert emqx_schema.field_at(["actions", "http", "a", "enable"]) is not None
    assert emqx_schema.field_at(["node", "enable"]) is None
    assert emqx_schema.field_at(["dashboard", "listeners", "http", "default_username"]) is None


@pytest.mark.parametrize("pattern", list(NUMBERS_AS_STRINGS))
def test_numbers_as_strings_exceptions_name_real_fields(dump_only: EmqxSchema, pattern: str) -> None:
    matched = [f for s in dump_only.structs() for f in s.fields.values()
               if isinstance(f.type, String) and f.type.numbers_too == NUMBERS_AS_STRINGS[pattern]]
    assert matched, pattern


def test_tags_of_unions_come_from_the_dump(dump_only: EmqxSchema) -> None:
    authn = dump_only.root.fields["authentication"].type.item  # type: ignore[attr-defined]
    builtin = next(m for m in authn.members if m.name == "builtin_db")
    assert builtin.fields["mechanism"].type == Literal("password_based")
    assert builtin.fields["backend"].type == Literal("built_in_database")
