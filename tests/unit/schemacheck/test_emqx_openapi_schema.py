"""EMQX's REST API document as JSON Schema: where it is read differently from how it is
written, and why (ecokit.schemacheck.openapi.Reading), each shown on a case."""

from __future__ import annotations

from ecokit.schemacheck.emqx_schema import EmqxSchema
from ecokit.schemacheck.openapi import OpenApi

CONNECTOR = {"type": "http", "name": "influx", "url": "http://influxdb:8086", "enable": True, "pool_size": 8,
             "headers": {"content-type": "text/plain"}, "connect_timeout": "15s"}


def test_reading_changes_are_named(emqx_api: OpenApi) -> None:
    assert emqx_api.reading.changes() == [
        "objects refuse keys they do not list (the server refuses unknown fields)",
        "oneOf read as anyOf (the server takes the first union member that fits)",
        "an enum with non-string members is not also held to type: string",
    ]
    assert emqx_api.counts.closed > 0
    assert emqx_api.counts.any_of > 0
    assert emqx_api.counts.enum_types > 0


def test_a_valid_connector_passes_both_readings(emqx_api: OpenApi, emqx_api_as_written: OpenApi) -> None:
    assert emqx_api.validate(CONNECTOR, "bridge_http.post_connector") == []
    assert emqx_api_as_written.validate(CONNECTOR, "bridge_http.post_connector") == []


def test_a_misspelt_key_passes_the_document_as_written_but_not_emqx(emqx_api: OpenApi,
                                                                   emqx_api_as_written: OpenApi) -> None:
    # Stricter than the document, as EMQX is: hocon refuses unknown struct fields.
    typo = {**CONNECTOR, "pool_sise": 8}
    assert emqx_api_as_written.validate(typo, "bridge_http.post_connector") == []
    problems = emqx_api.validate(typo, "bridge_http.post_connector", "connector")
    assert [p.where for p in problems] == ["connector"]
    assert "pool_sise" in problems[0].message


def test_infinity_fits_two_members_of_a_union_which_oneof_refuses(emqx_api: OpenApi,
                                                                 emqx_api_as_written: OpenApi) -> None:
    # Looser than the document: OneOf(String("infinity"), String) lets EMQX take "infinity";
    # the generated oneOf refuses it for matching both members.
    opts = {"request_ttl": "infinity"}
    assert emqx_api_as_written.validate(opts, "bridge_http.action_resource_opts")
    assert emqx_api.validate(opts, "bridge_http.action_resource_opts") == []


def test_enable_authn_false_is_typed_string_in_the_document(emqx_api: OpenApi,
                                                            emqx_api_as_written: OpenApi) -> None:
    # Looser than the document: enable_authn is printed as type string with members true,
    # false, quick_deny_anonymous; EMQX takes the booleans (anonymous stacks render false).
    listener = {"type": "tcp", "id": "tcp:default", "bind": "0.0.0.0:1883", "enable_authn": False}
    problems = emqx_api_as_written.validate(listener, "listeners.tcp_required_bind")
    assert [p.where for p in problems] == ["enable_authn"]
    assert emqx_api.validate(listener, "listeners.tcp_required_bind") == []
    assert emqx_api.validate({**listener, "enable_authn": "maybe"}, "listeners.tcp_required_bind")


def test_the_document_refuses_what_emqx_refuses(emqx_api: OpenApi) -> None:
    bad_action = {"type": "http", "name": "w", "connector": "c",
                  "parameters": {"method": "patch", "path": "/write", "max_retries": -1},
                  "resource_opts": {"query_mode": "later", "worker_pool_size": 2000}}
    problems = emqx_api.validate(bad_action, "bridge_http.post_bridge_v2", "action")
    assert {p.where for p in problems} == {"action.parameters.method", "action.parameters.max_retries",
                                           "action.resource_opts.query_mode", "action.resource_opts.worker_pool_size"}
    authn = {"mechanism": "password_based", "backend": "built_in_database", "user_id_type": "email",
             "password_hash_algorithm": {"name": "sha256", "salt_position": "middle"}}
    assert {p.where for p in emqx_api.validate(authn, "authn.builtin_db", "authn")} == {
        "authn.user_id_type", "authn.password_hash_algorithm.salt_position"}
    assert emqx_api.validate({"type": "file", "enable": True}, "authz.api_file", "source")[0].message == \
        "'rules' is a required property"
    assert emqx_api.validate({"sql": 1}, "rule_engine.rule_creation")


def test_the_document_cannot_tell_a_republish_action_from_a_user_function(emqx_api: OpenApi,
                                                                          emqx_schema: EmqxSchema) -> None:
    # oneOf/anyOf alike: {function, args} also fits user_provided_function, so a republish
    # with qos 3 passes the document. EMQX picks the member by the function's value (the
    # selector read from emqx_rule_engine_schema.erl), and so does the HOCON walk.
    rule = {"sql": "SELECT 1", "actions": [{"function": "republish", "args": {"topic": "t", "qos": 3}}]}
    assert emqx_api.validate(rule, "rule_engine.rule_creation") == []
    problems = emqx_schema.check({"rule_engine": {"rules": {"r1": rule}}})
    assert [p.where for p in problems] == ["rule_engine.rules.r1.actions[0].args.qos"]
