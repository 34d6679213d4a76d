"""The shadow state machine, request by request (AWS IoT Device Shadow semantics)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ecokit.shadow import machine as m
from ecokit.shadow.machine import ShadowKey, ShadowRecord

T0 = 1_700_000_000
LAMP = ShadowKey("lamp-1")


def req(doc: Any) -> bytes:
    return json.dumps(doc).encode()


class Shadow:
    """Drives one shadow through the machine like the service does (store = last record)."""

    def __init__(self, key: ShadowKey = LAMP) -> None:
        self.key = key
        self.record: ShadowRecord | None = None
        self.now = T0

    def send(self, op: m.Operation, payload: Any = b"", *, advance: int = 1) -> dict[str, dict[str, Any]]:
        self.now += advance
        raw = payload if isinstance(payload, bytes) else req(payload)
        outcome = m.handle(self.key, op, self.record, raw, self.now)
        if outcome.record is not None:
            self.record = outcome.record
        return {r.suffix: json.loads(r.payload) for r in outcome.responses}

    def update(self, *, advance: int = 1, **doc: Any) -> dict[str, dict[str, Any]]:
        return self.send("update", doc, advance=advance)


def test_get_of_a_missing_shadow_is_rejected_with_404_naming_it() -> None:
    out = Shadow().send("get")
    assert out == {"get/rejected": {"code": 404, "message": "No shadow exists with name: 'lamp-1'",
                                    "timestamp": T0 + 1}}


def test_named_shadow_404_names_the_shadow() -> None:
    out = Shadow(ShadowKey("lamp-1", "config")).send("get", {"clientToken": "c1"})
    assert out["get/rejected"]["message"] == "No shadow exists with name: 'config'"
    assert out["get/rejected"]["clientToken"] == "c1"


def test_first_update_creates_the_shadow_at_version_1() -> None:
    s = Shadow()
    out = s.update(state={"reported": {"power": "off"}})
    assert out["update/accepted"] == {
        "state": {"reported": {"power": "off"}},
        "metadata": {"reported": {"power": {"timestamp": T0 + 1}}},
        "version": 1, "timestamp": T0 + 1}
    assert "update/delta" not in out
    assert out["update/documents"]["previous"] is None
    assert out["update/documents"]["current"] == {
        "state": {"reported": {"power": "off"}},
        "metadata": {"reported": {"power": {"timestamp": T0 + 1}}}, "version": 1}


def test_worked_example_from_the_aws_guide() -> None:
    s = Shadow()
    s.update(state={"reported": {"power": "off", "led": {"r": 255, "g": 40}}})
    for _ in range(6):
        s.update(state={"reported": {"power": "off"}})
    assert s.record is not None
    assert s.record.version == 7
    out = s.update(state={"desired": {"power": "on", "led": {"g": 0}}}, clientToken="app-17", version=7)
    now = s.now
    assert out["update/accepted"] == {
        "state": {"desired": {"power": "on", "led": {"g": 0}}},
        "metadata": {"desired": {"power": {"timestamp": now}, "led": {"g": {"timestamp": now}}}},
        "version": 8, "timestamp": now, "clientToken": "app-17"}
    assert out["update/delta"] == {
        "state": {"power": "on", "led": {"g": 0}},
        "metadata": {"power": {"timestamp": now}, "led": {"g": {"timestamp": now}}},
        "version": 8, "timestamp": now, "clientToken": "app-17"}
    stale = s.update(state={"desired": {"power": "off"}}, version=7, clientToken="app-18")
    assert stale == {"update/rejected": {"code": 409, "message": "Version conflict", "timestamp": s.now,
                                         "clientToken": "app-18"}}
    assert s.record.version == 8
    reported = s.update(state={"reported": {"power": "on", "led": {"g": 0}}})
    assert reported["update/accepted"]["version"] == 9
    assert "update/delta" not in reported
    got = s.send("get")["get/accepted"]
    assert "delta" not in got["state"]
    assert got["state"]["reported"] == {"power": "on", "led": {"r": 255, "g": 0}}


def test_version_check_is_skipped_when_version_is_absent() -> None:
    s = Shadow()
    s.update(state={"desired": {"a": 1}})
    out = s.update(state={"desired": {"a": 2}})
    assert out["update/accepted"]["version"] == 2


@pytest.mark.parametrize("version", ["1", 1.5, True, -1, None])
def test_a_version_that_is_not_a_non_negative_integer_is_invalid(version: Any) -> None:
    out = Shadow().update(state={"desired": {"a": 1}}, version=version)
    assert out["update/rejected"]["code"] == 400
    assert out["update/rejected"]["message"] == "Invalid version"


def test_version_0_creates_a_new_shadow_and_other_versions_conflict() -> None:
    assert "update/accepted" in Shadow().update(state={"desired": {"a": 1}}, version=0)
    assert Shadow().update(state={"desired": {"a": 1}}, version=3)["update/rejected"]["code"] == 409


def test_get_returns_state_delta_metadata_and_version() -> None:
    s = Shadow()
    s.update(state={"desired": {"color": "red", "n": [1, 2]}, "reported": {"color": "blue", "extra": 1}})
    now = s.now
    got = s.send("get", {"clientToken": "g1"})["get/accepted"]
    assert got == {
        "state": {"desired": {"color": "red", "n": [1, 2]}, "reported": {"color": "blue", "extra": 1},
                  "delta": {"color": "red", "n": [1, 2]}},
        "metadata": {"desired": {"color": {"timestamp": now}, "n": [{"timestamp": now}, {"timestamp": now}]},
                     "reported": {"color": {"timestamp": now}, "extra": {"timestamp": now}}},
        "version": 1, "timestamp": now + 1, "clientToken": "g1"}


def test_get_with_an_empty_or_non_json_payload_is_answered() -> None:
    s = Shadow()
    s.update(state={"reported": {"a": 1}})
    assert "get/accepted" in s.send("get", b"")
    assert "get/accepted" in s.send("get", b"not json")


def test_metadata_timestamps_are_per_field() -> None:
    s = Shadow()
    s.update(state={"reported": {"a": 1, "b": {"c": 2, "d": 3}}})
    first = s.now
    s.update(state={"reported": {"b": {"c": 5}}}, advance=10)
    second = s.now
    meta = s.send("get")["get/accepted"]["metadata"]["reported"]
    assert meta == {"a": {"timestamp": first}, "b": {"c": {"timestamp": second}, "d": {"timestamp": first}}}


def test_null_removes_a_field_and_its_metadata() -> None:
    s = Shadow()
    s.update(state={"reported": {"a": 1, "led": {"r": 1, "g": 2}}})
    out = s.update(state={"reported": {"led": None}})
    assert out["update/accepted"]["state"] == {"reported": {"led": None}}
    assert out["update/accepted"]["metadata"] == {"reported": {"led": {"timestamp": s.now}}}
    got = s.send("get")["get/accepted"]
    assert got["state"]["reported"] == {"a": 1}
    assert "led" not in got["metadata"]["reported"]


def test_null_on_a_nested_leaf_keeps_the_emptied_object() -> None:
    s = Shadow()
    s.update(state={"reported": {"led": {"g": 2}}})
    s.update(state={"reported": {"led": {"g": None}}})
    assert s.send("get")["get/accepted"]["state"]["reported"] == {"led": {}}


def test_null_section_removes_the_section_and_null_state_clears_both() -> None:
    s = Shadow()
    s.update(state={"desired": {"a": 1}, "reported": {"a": 2}})
    s.update(state={"desired": None})
    got = s.send("get")["get/accepted"]
    assert got["state"] == {"reported": {"a": 2}}
    assert "desired" not in got["metadata"]
    out = s.update(state=None)
    assert out["update/accepted"]["version"] == 3
    got = s.send("get")["get/accepted"]
    assert got["state"] == {}
    assert got["version"] == 3


def test_arrays_replace_whole() -> None:
    s = Shadow()
    s.update(state={"reported": {"colors": ["red", "green", "blue"]}})
    s.update(state={"reported": {"colors": ["amber"]}})
    assert s.send("get")["get/accepted"]["state"]["reported"]["colors"] == ["amber"]


def test_array_with_null_is_rejected() -> None:
    out = Shadow().update(state={"desired": {"colors": [None, "RED"]}})
    assert out["update/rejected"]["code"] == 400
    assert out["update/rejected"]["message"] == "State contains an invalid node"


def test_scalar_replaced_by_object_and_back() -> None:
    s = Shadow()
    s.update(state={"reported": {"x": 1}})
    s.update(state={"reported": {"x": {"y": 2}}})
    assert s.send("get")["get/accepted"]["state"]["reported"] == {"x": {"y": 2}}
    s.update(state={"reported": {"x": 3}})
    got = s.send("get")["get/accepted"]
    assert got["state"]["reported"] == {"x": 3}
    assert got["metadata"]["reported"] == {"x": {"timestamp": s.now - 1}}


def test_delta_carries_every_differing_desired_key_not_only_the_requested_ones() -> None:
    s = Shadow()
    s.update(state={"desired": {"a": 1, "b": 2}})
    out = s.update(state={"desired": {"c": 3}})
    assert out["update/delta"]["state"] == {"a": 1, "b": 2, "c": 3}


def test_reported_only_update_publishes_no_delta_but_get_shows_it() -> None:
    s = Shadow()
    s.update(state={"desired": {"a": 1, "b": 1}})
    out = s.update(state={"reported": {"a": 1}})
    assert "update/delta" not in out
    assert s.send("get")["get/accepted"]["state"]["delta"] == {"b": 1}


def test_update_with_desired_publishes_the_delta_even_if_desired_did_not_change() -> None:
    s = Shadow()
    s.update(state={"desired": {"a": 1}})
    s.update(state={"reported": {"a": 2}})
    out = s.update(state={"desired": {"a": 1}})
    assert out["update/delta"]["state"] == {"a": 1}


def test_delta_metadata_holds_desired_side_timestamps() -> None:
    s = Shadow()
    s.update(state={"desired": {"a": 1}})
    first = s.now
    out = s.update(state={"desired": {"b": 2}}, advance=5)
    assert out["update/delta"]["metadata"] == {"a": {"timestamp": first}, "b": {"timestamp": s.now}}


def test_delta_is_absent_when_desired_equals_reported() -> None:
    s = Shadow()
    out = s.update(state={"desired": {"a": {"b": [1, 2]}}, "reported": {"a": {"b": [1, 2]}, "z": 0}})
    assert "update/delta" not in out


def test_delta_compares_booleans_strictly_and_numbers_by_value() -> None:
    assert m.shadow_delta({"a": True, "b": 1.0}, {"a": 1, "b": 1}) == {"a": True}


def test_delta_of_object_against_scalar_copies_the_whole_object() -> None:
    assert m.shadow_delta({"a": {"b": 1, "c": 2}}, {"a": 5}) == {"a": {"b": 1, "c": 2}}


def test_client_token_longer_than_64_bytes_is_rejected() -> None:
    out = Shadow().update(state={"desired": {"a": 1}}, clientToken="x" * 65)
    assert out == {"update/rejected": {"code": 400, "message": "Invalid clientToken", "timestamp": T0 + 1}}
    assert "update/accepted" in Shadow().update(state={"desired": {"a": 1}}, clientToken="é" * 32)
    assert "update/rejected" in Shadow().update(state={"desired": {"a": 1}}, clientToken="é" * 33)


def test_client_token_must_be_a_string() -> None:
    assert Shadow().update(state={"desired": {}}, clientToken=5)["update/rejected"]["code"] == 400


@pytest.mark.parametrize(("payload", "code", "message"), [
    (b"{not json", 400, "Invalid JSON"),
    (b"[1, 2]", 400, "Invalid JSON"),
    (b'{"state": {"desired": NaN}}', 400, "Invalid JSON"),
    (b"\xff\xfe", 415, "Unsupported documented encoding; supported encoding is UTF-8"),
    (b'{"clientToken": "t"}', 400, "Missing required node: state"),
    (b'{"state": 5}', 400, "State node must be an object"),
    (b'{"state": {"desired": 5}}', 400, "Desired node must be an object"),
    (b'{"state": {"reported": [1]}}', 400, "Reported node must be an object"),
    (b'{"state": {"delta": {"a": 1}}}', 400, "State contains an invalid node"),
])
def test_malformed_updates_are_rejected_with_aws_codes(payload: bytes, code: int, message: str) -> None:
    s = Shadow()
    out = s.send("update", payload)
    assert out["update/rejected"]["code"] == code
    assert out["update/rejected"]["message"] == message
    assert s.record is None


def test_rejection_echoes_a_valid_client_token() -> None:
    out = Shadow().send("update", b'{"clientToken": "t1", "state": 5}')
    assert out["update/rejected"]["clientToken"] == "t1"


def test_fields_outside_desired_and_reported_are_ignored() -> None:
    s = Shadow()
    s.update(state={"reported": {"a": 1}}, metadata={"x": 1}, other="y")
    got = s.send("get")["get/accepted"]
    assert got["state"] == {"reported": {"a": 1}}


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"k": value}
    return value


def test_six_levels_inside_a_section_are_allowed_seven_are_not() -> None:
    assert "update/accepted" in Shadow().update(state={"desired": nested(6)})
    out = Shadow().update(state={"reported": nested(7)})
    assert out["update/rejected"] == {"code": 400, "timestamp": T0 + 1,
                                      "message": "JSON contains too many levels of nesting; maximum is 6"}


def test_arrays_count_as_a_level_of_nesting() -> None:
    assert Shadow().update(state={"desired": {"a": {"b": {"c": {"d": {"e": [[1]]}}}}}})["update/rejected"]


def test_state_over_8kb_is_rejected_with_413() -> None:
    out = Shadow().update(state={"desired": {"blob": "x" * 8200}})
    assert out["update/rejected"]["code"] == 413
    assert out["update/rejected"]["message"] == "The payload exceeds the maximum size allowed"


def test_size_limit_applies_to_the_merged_document_not_the_request() -> None:
    s = Shadow()
    s.update(state={"reported": {"a": "x" * 4000}})
    s.update(state={"desired": {"b": "y" * 4000}})
    out = s.update(state={"reported": {"c": "z" * 200}})
    assert out["update/rejected"]["code"] == 413
    assert s.record is not None
    assert s.record.version == 2
    assert "update/accepted" in s.update(state={"desired": {"b": None}, "reported": {"c": "z" * 200}})


def test_metadata_does_not_count_towards_the_size_limit() -> None:
    doc = {f"k{i:03d}": i for i in range(700)}
    assert m.state_size({"desired": doc}) < 8192
    assert "update/accepted" in Shadow().update(state={"desired": doc})


def test_request_payload_over_128kb_is_rejected_before_parsing() -> None:
    out = Shadow().send("update", b"{" + b" " * (128 * 1024) + b"}")
    assert out["update/rejected"]["code"] == 413


def test_delete_replies_with_the_version_and_get_then_404s() -> None:
    s = Shadow()
    s.update(state={"reported": {"a": 1}})
    s.update(state={"reported": {"a": 2}})
    out = s.send("delete", {"clientToken": "d1"})
    assert out == {"delete/accepted": {"version": 2, "timestamp": s.now, "clientToken": "d1"}}
    assert s.send("get")["get/rejected"]["code"] == 404
    assert s.send("delete")["delete/rejected"]["code"] == 404


def test_delete_keeps_the_version_for_a_shadow_recreated_within_48_hours() -> None:
    s = Shadow()
    for i in range(3):
        s.update(state={"reported": {"a": i}})
    s.send("delete")
    out = s.update(state={"reported": {"b": 1}}, advance=3600)
    assert out["update/accepted"]["version"] == 4
    assert out["update/documents"]["previous"] is None
    assert s.send("get")["get/accepted"]["state"] == {"reported": {"b": 1}}
    assert s.update(state={"reported": {}}, version=3)["update/rejected"]["code"] == 409


def test_version_restarts_after_48_hours_of_deletion() -> None:
    s = Shadow()
    s.update(state={"reported": {"a": 1}})
    s.update(state={"reported": {"a": 2}})
    s.send("delete")
    out = s.update(state={"reported": {"a": 3}}, advance=48 * 3600)
    assert out["update/accepted"]["version"] == 1


def test_documents_hold_previous_and_current() -> None:
    s = Shadow()
    s.update(state={"desired": {"a": 1}})
    t1 = s.now
    out = s.update(state={"reported": {"a": 1}}, clientToken="c")
    docs = out["update/documents"]
    assert docs == {
        "previous": {"state": {"desired": {"a": 1}}, "metadata": {"desired": {"a": {"timestamp": t1}}},
                     "version": 1},
        "current": {"state": {"desired": {"a": 1}, "reported": {"a": 1}},
                    "metadata": {"desired": {"a": {"timestamp": t1}}, "reported": {"a": {"timestamp": s.now}}},
                    "version": 2},
        "timestamp": s.now, "clientToken": "c"}


def test_rejected_update_changes_nothing() -> None:
    s = Shadow()
    s.update(state={"desired": {"a": 1}})
    before = s.record
    s.update(state={"desired": {"a": 2}}, version=99)
    assert s.record == before


@pytest.mark.parametrize(("key", "message"), [
    (ShadowKey("bad name"), "Invalid thing name: 'bad name'"),
    (ShadowKey("x" * 129), "Invalid thing name"),
    (ShadowKey("ok", "bad/name"), "Invalid shadow name"),
    (ShadowKey("ok", "n" * 65), "Invalid shadow name"),
])
def test_invalid_names_are_rejected(key: ShadowKey, message: str) -> None:
    for op in m.OPERATIONS:
        out = m.handle(key, op, None, b"{}", T0)
        assert out.rejected is not None
        assert out.rejected.document["code"] == 400
        assert out.rejected.document["message"].startswith(message)


def test_shadow_names_may_contain_dollar_and_colon() -> None:
    out = m.handle(ShadowKey("thing:1", "$cfg_v-2"), "update", None, req({"state": {"desired": {}}}), T0)
    assert out.rejected is None


def test_record_json_round_trip() -> None:
    s = Shadow()
    s.update(state={"desired": {"a": [1, {"b": 2}]}, "reported": {"c": None, "d": "é"}})
    assert s.record is not None
    assert ShadowRecord.from_json(json.loads(json.dumps(s.record.to_json()))) == s.record


def test_unknown_operation_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown shadow operation"):
        m.handle(LAMP, "patch", None, b"", T0)  # type: ignore[arg-type]
