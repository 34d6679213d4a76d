"""Property tests of the shadow state machine (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecokit.shadow import machine as m
from ecokit.shadow.machine import ShadowKey, ShadowRecord

KEY = ShadowKey("thing-1")
keys = st.sampled_from(["a", "b", "c", "d"])
scalars = st.one_of(st.booleans(), st.integers(-3, 3), st.sampled_from([1.0, 2.5, -0.5]),
                    st.sampled_from(["", "x", "y"]))
values = st.recursive(scalars | st.lists(scalars, max_size=3),
                      lambda children: st.dictionaries(keys, children, max_size=3), max_leaves=8)
objects = st.dictionaries(keys, values, max_size=4)
# Patches may also delete with null.
patch_values = st.recursive(scalars | st.none() | st.lists(scalars, max_size=2),
                            lambda children: st.dictionaries(keys, children, max_size=3), max_leaves=6)
patches = st.dictionaries(keys, patch_values, max_size=3)

Path = tuple[str, ...]
MISSING = object()


def leaves(obj: dict[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    """Leaf paths of an object: scalars, arrays and empty objects."""
    out: dict[Path, Any] = {}
    for k, v in obj.items():
        if isinstance(v, dict) and v:
            out.update(leaves(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def at(obj: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return MISSING
        obj = obj[part]
    return obj


def differs(want: Any, have: Any) -> bool:
    if have is MISSING:
        return True
    if isinstance(want, dict):  # an empty desired object: satisfied by any reported object
        return not isinstance(have, dict)
    return not m.json_equal(want, have)


def send(record: ShadowRecord | None, op: m.Operation, doc: Any, now: int) -> m.Outcome:
    return m.handle(KEY, op, record, json.dumps(doc).encode(), now)


@given(objects, objects)
def test_delta_is_exactly_the_desired_leaves_that_differ_from_reported(desired: Any, reported: Any) -> None:
    out = send(None, "update", {"state": {"desired": desired, "reported": reported}}, 1)
    assert out.record is not None
    delta, _ = out.record.delta()
    expected = {p: v for p, v in leaves(desired).items() if differs(v, at(reported, p))}
    assert leaves(delta) == expected
    published = [r for r in out.responses if r.suffix == "update/delta"]
    assert (json.loads(published[0].payload)["state"] if published else {}) == delta


@given(objects, objects)
def test_reporting_the_delta_clears_it(desired: Any, reported: Any) -> None:
    out = send(None, "update", {"state": {"desired": desired, "reported": reported}}, 1)
    assert out.record is not None
    delta, _ = out.record.delta()
    after = send(out.record, "update", {"state": {"reported": delta}}, 2)
    assert after.record is not None
    assert after.record.delta() == ({}, {})
    assert not any(r.suffix == "update/delta" for r in after.responses)


operations = st.one_of(
    st.tuples(st.just("update"), st.fixed_dictionaries(
        {"state": st.fixed_dictionaries({}, optional={"desired": patches | st.none(),
                                                      "reported": patches | st.none()})},
        optional={"version": st.integers(0, 12), "clientToken": st.text(max_size=3)})),
    st.tuples(st.just("get"), st.just({})),
    st.tuples(st.just("delete"), st.just({})),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(operations, st.integers(0, 30 * 3600)), max_size=25))
def test_versions_strictly_increase_and_delete_keeps_them(steps: list[tuple[tuple[str, Any], int]]) -> None:
    record: ShadowRecord | None = None
    now = 0
    last_update_version = 0
    deleted_at: int | None = None
    for (op, doc), advance in steps:
        now += advance
        out = send(record, op, doc, now)  # type: ignore[arg-type]
        replies = {r.suffix: json.loads(r.payload) for r in out.responses}
        if out.rejected is not None:
            assert out.record is None
            continue
        if op == "update":
            version = replies["update/accepted"]["version"]
            if deleted_at is not None and now - deleted_at >= m.DELETED_VERSION_MEMORY_S:
                assert version == 1
            else:
                assert version == last_update_version + 1
            if "version" in doc:
                assert doc["version"] == version - 1  # an expected version is the one replaced
            assert replies["update/documents"]["current"]["version"] == version
            last_update_version = version
            deleted_at = None
        elif op == "delete":
            assert replies["delete/accepted"]["version"] == last_update_version
            deleted_at = now
        else:
            assert replies["get/accepted"]["version"] == last_update_version
        if out.record is not None:
            record = out.record
        if "clientToken" in doc:
            assert all(json.loads(r.payload)["clientToken"] == doc["clientToken"] for r in out.responses)


@given(objects, objects)
def test_a_written_state_reads_back_unchanged(desired: Any, reported: Any) -> None:
    out = send(None, "update", {"state": {"desired": desired, "reported": reported}}, 5)
    got = json.loads(send(out.record, "get", {}, 6).responses[0].payload)
    assert got["state"]["desired"] == desired
    assert got["state"]["reported"] == reported


@given(st.lists(st.tuples(patches, patches), min_size=1, max_size=8))
def test_documents_chain_and_round_trip(updates: list[tuple[Any, Any]]) -> None:
    record: ShadowRecord | None = None
    previous_current: Any = None
    for i, (desired, reported) in enumerate(updates):
        out = send(record, "update", {"state": {"desired": desired, "reported": reported}}, 10 + i)
        assert out.record is not None
        docs = json.loads(next(r for r in out.responses if r.suffix == "update/documents").payload)
        assert docs["previous"] == previous_current
        assert docs["current"] == json.loads(json.dumps(out.record.document()))
        stored = json.loads(json.dumps(out.record.to_json()))
        assert ShadowRecord.from_json(stored) == out.record
        got = json.loads(send(out.record, "get", {}, 10 + i).responses[0].payload)
        state = {k: v for k, v in got["state"].items() if k != "delta"}
        assert state == docs["current"]["state"]
        assert got["metadata"] == docs["current"]["metadata"]
        previous_current = docs["current"]
        record = out.record


@given(patches, patches)
def test_metadata_mirrors_the_state_tree(first: Any, second: Any) -> None:
    record = send(None, "update", {"state": {"reported": first}}, 1).record
    record = send(record, "update", {"state": {"reported": second}}, 2).record
    assert record is not None

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(v) for v in value]
        return "leaf"

    def meta_shape(meta: Any, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: meta_shape(meta[k], v) for k, v in value.items()}
        if isinstance(value, list):
            return [meta_shape(mm, v) for mm, v in zip(meta, value, strict=True)]
        assert set(meta) == {"timestamp"}
        assert meta["timestamp"] in (1, 2)
        return "leaf"

    reported = record.state["reported"]
    assert record.metadata["reported"].keys() == reported.keys()
    assert meta_shape(record.metadata["reported"], reported) == shape(reported)
