"""A hostile-payload corpus from one device, through the bridge, the fleet processor and the
shadow service (issue 10, "Also"): invalid UTF-8, deep nesting, huge numbers, NaN, payloads
over 256 KB, binary, and line-protocol metacharacters in every field and topic level.

Nothing is lost without a count: for every rule, points stored + dead letters = messages
sent, exactly; every shadow request gets exactly one answer; no service records a failure
(a message that raised) or stops; and a valid batch afterwards is stored in full. What a
rule stored is what was sent (metacharacters survive line protocol byte for byte)."""

from __future__ import annotations

import base64
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from security_support import DEVICES, client, count, healthz, metrics, telemetry

from ecokit.stack import Stack
from ecokit.store.influx import InfluxV1, quote_string
from ecokit.testing import running_stack, wait_for, write_project

DEVICE = "v6"
TELEMETRY = f"fleet/{DEVICE}/telemetry"
ALL_TIME = "time >= -9223372036854775806 AND time <= 9223372036854775806"
METACHARS = 'a,b=c d"e\\f\ng\th\rj\\'


# A rule with a tag from the payload and a free string field: what a device chooses reaches
# a tag value and a string field of a line.
NOTES_RULE = {"topic": "fleet/+/notes", "measurement": "notes",
              "tags": {"vehicle": {"from": "topic", "segment": 2}, "driver": {"from": "payload", "path": "driver"}},
              "fields": {"text": {"type": "string"}},
              "time": {"from": "payload", "path": "ts", "unit": "ms", "if_missing": "received"}}
NOTES = f"fleet/{DEVICE}/notes"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, server_binaries: None) -> Iterator[Stack]:
    project = write_project(tmp_path_factory.mktemp("corpus"), devices=DEVICES, extra={
        "bridge": {"flush_ms": 50, "batch_size": 500},
        "processor": {"offline_after": 30, "status_interval": 0},
        "rules": {"notes": NOTES_RULE},
    })
    with running_stack(project) as running:
        yield running


def fix(seq: int, ts: int, **fields: Any) -> bytes:
    """A minimal valid fix (only a position is required) with extra fields."""
    doc: dict[str, Any] = {"v": 1, "vehicle": DEVICE, "seq": seq, "ts": ts, "lat": 52.5, "lng": 13.4}
    doc.update(fields)
    return json.dumps(doc).encode()


def raw(text: str) -> bytes:
    return text.encode()


def telemetry_corpus(ts: int) -> list[tuple[str, bytes]]:
    """(what, payload) for the telemetry topic; each with its own timestamp where it has one."""
    rnd = random.Random(10)
    out: list[tuple[str, bytes]] = []

    def add(what: str, payload: bytes) -> None:
        out.append((what, payload))

    pos = '"lat":52.5,"lng":13.4'
    n = len(out)
    add("invalid utf-8", b"\xff\xfe\xfa\x80")
    add("invalid utf-8 in a string", b'{"ts":%d,%s,"status":"\xff\xfe"}' % (ts + 1, pos.encode()))
    add("overlong utf-8", b'{"ts":%d,%s,"status":"\xc0\xaf"}' % (ts + 2, pos.encode()))
    add("lone surrogate escape", raw(f'{{"ts":{ts + 3},{pos},"status":"\\ud800"}}'))
    add("NUL in a string", raw(f'{{"ts":{ts + 4},{pos},"status":"a\\u0000b"}}'))
    add("deep object", b'{"a":' * 10_000 + b"1" + b"}" * 10_000)
    add("deep array", b"[" * 100_000 + b"]" * 100_000)
    add("deep in a valid fix", raw(f'{{"ts":{ts + 5},{pos},"extra":' + "[" * 5000 + "]" * 5000 + "}"))
    add("float beyond double", raw(f'{{"ts":{ts + 6},"lat":1e400,"lng":13.4}}'))
    add("negative float beyond double", raw(f'{{"ts":{ts + 7},{pos},"speed":-1e309}}'))
    add("float beyond InfluxDB", raw(f'{{"ts":{ts + 8},{pos},"speed":1.7e308}}'))
    add("401-digit integer", raw(f'{{"ts":{ts + 9},{pos},"seq":{"9" * 401}}}'))
    add("int beyond int64", raw(f'{{"ts":{ts + 10},{pos},"seq":{2 ** 63}}}'))
    add("uint64 max", raw(f'{{"ts":{ts + 11},{pos},"seq":{2 ** 64 - 1}}}'))
    add("timestamp 1e30", raw(f'{{"ts":1000000000000000000000000000000,{pos}}}'))
    add("timestamp beyond int64 ns", raw(f'{{"ts":{2 ** 62},{pos}}}'))
    add("negative timestamp", raw(f'{{"ts":-1,{pos}}}'))
    add("timestamp as a float", raw(f'{{"ts":{ts + 12}.5,{pos}}}'))
    add("timestamp as a string", raw(f'{{"ts":"{ts + 13}",{pos}}}'))
    add("tiny float", raw(f'{{"ts":{ts + 14},{pos},"speed":1e-400}}'))
    add("NaN", raw(f'{{"ts":{ts + 15},"lat":NaN,"lng":13.4}}'))
    add("Infinity", raw(f'{{"ts":{ts + 16},{pos},"speed":Infinity}}'))
    add("-Infinity", raw(f'{{"ts":{ts + 17},{pos},"fuel":-Infinity}}'))
    add("300 KB string", fix(18, ts + 18, status="x" * 300_000))
    add("1 MiB + 1 string", fix(19, ts + 19, status="x" * ((1 << 20) + 1))[:1_000_000])  # cut: invalid JSON
    add("900 KB valid fix", fix(20, ts + 20, note="y" * 900_000))
    add("binary", rnd.randbytes(4096))
    add("NUL bytes", b"\x00" * 256)
    add("binary after JSON", fix(21, ts + 21) + b"\x00\xff")
    add("empty", b"")
    add("JSON array", b"[1,2,3]")
    add("JSON string", b'"fleet"')
    add("JSON null", b"null")
    add("JSON number", b"52.5")
    add("lat as string", raw(f'{{"ts":{ts + 22},"lat":"52.5,evil=1","lng":13.4}}'))
    add("lat as bool", raw(f'{{"ts":{ts + 23},"lat":true,"lng":13.4}}'))
    add("lat as object", raw(f'{{"ts":{ts + 24},"lat":{{"x":1}},"lng":13.4}}'))
    add("lat null", raw(f'{{"ts":{ts + 25},"lat":null,"lng":13.4}}'))
    add("duplicate keys", raw(f'{{"ts":{ts + 26},"lat":1,"lat":"x","lng":13.4}}'))
    add("50,000 keys", raw("{" + ",".join(f'"k{i}":{i}' for i in range(50_000)) + f',"ts":{ts + 27},{pos}}}'))
    add("100 KB key", raw(f'{{"{"k" * 100_000}":1,"ts":{ts + 28},{pos}}}'))
    # line-protocol metacharacters in every field a rule writes, and in the payload's ids
    add("metacharacters in a string field", fix(29, ts + 29, status=METACHARS))
    add("trailing backslash", fix(30, ts + 30, status="ends with \\"))
    add("only a backslash", fix(31, ts + 31, status="\\"))
    add("a valid status", fix(37, ts + 37, status="idle"))
    add("metacharacters in the vehicle field", fix(32, ts + 32, vehicle='v1,evil=1 lat=0 "x"\n'))
    add("metacharacters in keys", raw(f'{{"ts":{ts + 33},{pos},"a b,c=d\\"e\\\\":1}}'))
    add("injected line", fix(34, ts + 34, status='x" 1\ntelemetry,vehicle=v1 lat=0,lng=0 1'))
    add("unicode", fix(35, ts + 35, status="Ünïcødé 🚚 \u2028\u2029 \ufeff"))
    add("no timestamp", raw(f'{{{pos},"status":"received time"}}'))
    add("a full simulator message", telemetry(DEVICE, 36, ts + 36))
    assert len(out) - n == len({w for w, _ in out}), "names are unique"
    return out


TOPIC_LEVELS = ["a,b", "a b", "a=b", 'a"b', "a\\b", "trailing\\", "ü-🚚", "", "$dollar", "x" * 10_000,
                "a,b=c d\\"]
# MQTT topics are UTF-8 without control characters (C0, DEL, C1): Mosquitto disconnects the publisher
# (malformed UTF-8), so these never reach a service.
BROKER_REFUSES = ["new\nline", "tab\tx", "cr\rx", "esc\x1b", "del\x7f", "c1\x85"]


def topic_corpus(ts: int) -> list[tuple[str, bytes]]:
    """(topic, payload): line-protocol metacharacters in every level the archive tags."""
    return [(f"fleet/{DEVICE}/{level}", fix(0, ts)) for level in TOPIC_LEVELS] + [
        (f"fleet/{DEVICE}/{TOPIC_LEVELS[0]}/{TOPIC_LEVELS[1]}/{TOPIC_LEVELS[2]}", b"\xff\x00binary")]


def shadow_corpus() -> list[tuple[str, bytes]]:
    """(topic, payload) shadow requests: every one must get exactly one accepted/rejected."""
    base = f"things/{DEVICE}/shadow"
    payloads = [b"\xff\xfe", b'{"state":{"desired":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001 + b"}",
                b'{"state":{"reported":{"x":NaN}}}', b'{"state":{"reported":{"x":1e400}}}',
                b'{"state":{"reported":{"x":' + b"9" * 401 + b"}}}",
                json.dumps({"state": {"reported": {"big": "x" * 300_000}}}).encode(),
                random.Random(11).randbytes(2048), b"", b"null", b"[]",
                json.dumps({"state": {"reported": {METACHARS: METACHARS}}}).encode(),
                json.dumps({"state": {"desired": {"mode": "eco"}}}).encode()]
    out = [(f"{base}/update", p) for p in payloads]
    out += [(f"{base}/get", b"\xff"), (f"{base}/delete", b"[" * 50_000)]
    for name in ("a,b", "a b", "a=b", 'a"b', "a\\b", "x" * 200, "ü", "$x", "ok-name"):
        out.append((f"{base}/name/{name}/update", b'{"state":{"reported":{"ok":true}}}'))
    return out


# (driver, text): stored exactly as sent, or dead-lettered (empty, control characters, a
# trailing backslash in a tag, a lone surrogate)
NOTES_CORPUS = [
    ("a,b=c d", 'a,b=c d"e\\f'), ('x"y', "\\"), ("back\\slash", 'x" 1 telemetry,vehicle=v1 lat=0,lng=0 1'),
    ("ü🚚", "Ünïcødé 🚚 \u2028\u2029 \ufeff"), ("ends\\", "ok"), ("", "ok"), ("new\nline", "ok"),
    ("ok", METACHARS), ("ok", "a\u0000b"), ("=", "="), (" ", " "), (",", ","), ('"', '"'),
    ("\\ud800-escaped", "fine"), ("x" * 70_000, "long tag"), ("ok", "y" * 300_000),
]
NOTES_STORED = [(d, t) for d, t in NOTES_CORPUS
                if d and not d.endswith("\\") and not any(ord(c) < 32 for c in d + t) and len(d) < 65_000]
# raw payloads for the archive (base64, byte for byte)
RAW = f"fleet/{DEVICE}/raw"
RAW_CORPUS = [METACHARS.encode(), b"\xff\xfe\x00", b'x" 1\narchive,topic=a payload="" 1', b"\\", b""]


def notes_corpus(ts: int) -> list[bytes]:
    out = [json.dumps({"driver": d, "text": t, "ts": ts + i}).encode() for i, (d, t) in enumerate(NOTES_CORPUS)]
    out.append(raw(f'{{"driver":"\\ud800","text":"x","ts":{ts + 100}}}'))  # a lone surrogate
    out.append(raw(f'{{"driver":"ok","text":"\\udfff","ts":{ts + 101}}}'))
    return out


def archived_by_topic(stack: Stack, topics: set[str]) -> int:
    total = 0
    with InfluxV1(stack.influx_endpoint("reader")) as reader:
        for topic in topics:
            rows = list(reader.rows(f'SELECT count("qos") FROM "ecokit_archive"."archive" '
                                    f"WHERE topic = $topic AND {ALL_TIME}", params={"topic": topic}))
            total += int(rows[0]["count"]) if rows else 0
    return total


def stored_notes(stack: Stack) -> int:
    return count(stack, f"SELECT count(text) FROM notes WHERE vehicle = '{DEVICE}' AND {ALL_TIME}")


def stored_telemetry(stack: Stack) -> int:
    return count(stack, f"SELECT count(lat) FROM telemetry WHERE vehicle = '{DEVICE}' AND {ALL_TIME}")


def failed(stack: Stack, service: str) -> float:
    return sum(v for k, v in metrics(stack, service).items()
               if k.startswith(f"ecokit_{service}_messages_failed_total"))


@pytest.mark.timeout(300)
def test_the_hostile_corpus_is_stored_or_dead_lettered_exactly_and_nothing_stops(stack: Stack) -> None:
    ts = int(time.time() * 1000) - 600_000
    corpus = telemetry_corpus(ts)
    topics = topic_corpus(ts + 1000)
    shadows = shadow_corpus()
    notes = [(NOTES, p) for p in notes_corpus(ts + 5000)]
    raws = [(RAW, p) for p in RAW_CORPUS]
    before = {s: failed(stack, s) for s in ("processor", "shadow")}
    processor_before = metrics(stack, "processor")
    stored_before = stored_telemetry(stack)
    sent: Counter[str] = Counter()
    with client(stack) as admin, client(stack, DEVICE) as device:
        admin.subscribe("ecokit/deadletter/#")
        device.subscribe(f"things/{DEVICE}/shadow/#")
        for what, payload in corpus:
            reason = device.publish(TELEMETRY, payload, qos=1, timeout=15)
            assert reason is not None, what
            assert not reason.is_failure, (what, reason)
            sent[TELEMETRY] += 1
        for topic, payload in topics + notes + raws + shadows:
            reason = device.publish(topic, payload, qos=1, timeout=15)
            assert reason is not None, topic[:60]
            assert not reason.is_failure, (topic[:60], reason)
            sent[topic] += 1

        # every shadow request: exactly one accepted or rejected answer
        answers = wait_for("the shadow answers", lambda: _answers(device, len(shadows)), timeout=60)
        assert len(answers) == len(shadows)

        # every rule: stored + dead-lettered = sent
        n_telemetry, n_notes, n_all = sent[TELEMETRY], sent[NOTES], sum(sent.values())
        letters: list[dict[str, Any]] = []

        def settled() -> bool:
            letters.extend(json.loads(m.payload) for m in admin.drain(0.3))
            mine = [d for d in letters if d.get("topic") in sent or d.get("reason") == "refused"]
            by_rule = Counter(d["rule"] for d in mine)
            stored_t = stored_telemetry(stack) - stored_before
            stored_a = archived_by_topic(stack, set(sent))
            return (stored_t + by_rule["telemetry"] == n_telemetry
                    and stored_notes(stack) + by_rule["notes"] == n_notes
                    and stored_a + by_rule["archive"] >= n_all)

        wait_for("every message stored or dead-lettered", settled, timeout=90)
        time.sleep(1.0)
        letters.extend(json.loads(m.payload) for m in admin.drain(0.5))
    mine = [d for d in letters if d.get("topic") in sent or d.get("reason") == "refused"]
    by_rule = Counter(d["rule"] for d in mine)
    stored_t = stored_telemetry(stack) - stored_before
    stored_a = archived_by_topic(stack, set(sent))
    assert stored_t + by_rule["telemetry"] == n_telemetry, (stored_t, by_rule)
    assert stored_a + by_rule["archive"] == n_all, (stored_a, by_rule)
    assert stored_notes(stack) + by_rule["notes"] == n_notes, (stored_notes(stack), by_rule)
    assert set(by_rule) <= {"telemetry", "notes", "archive"}, by_rule  # no service's "failed" dead letter
    assert not [d for d in mine if d["reason"] == "refused"], "InfluxDB refused nothing the rules let through"
    # what a refusal names is the message (base64, cut at 256 KiB with its size)
    for doc in mine:
        data = base64.b64decode(doc["payload"])
        assert len(data) <= 256 * 1024
        if doc.get("truncated"):
            assert doc["size"] > 256 * 1024

    # what was stored is what was sent: tags, strings and raw payloads byte for byte
    with InfluxV1(stack.influx_endpoint("reader")) as reader:
        rows = list(reader.rows(f"SELECT driver, text FROM notes WHERE vehicle = '{DEVICE}' AND {ALL_TIME}"))
        assert sorted((r["driver"], r["text"]) for r in rows) == sorted(NOTES_STORED)
        rows = list(reader.rows(f'SELECT payload FROM "ecokit_archive"."archive" WHERE topic = '
                                f"{quote_string(RAW)} AND {ALL_TIME}"))
        assert sorted(base64.b64decode(r["payload"]) for r in rows) == sorted(RAW_CORPUS)
        for vehicle in ("v1", "a", "fleet"):
            injected = list(reader.rows(f"SELECT count(lat) FROM telemetry WHERE vehicle = '{vehicle}' "
                                        f"AND {ALL_TIME}"))
            assert not injected, "no payload became a point of another series"
    assert archived_by_topic(stack, {f"fleet/{DEVICE}/{TOPIC_LEVELS[4]}"}) == 1

    # no failures, every service healthy, and the processor saw every telemetry message
    assert {s: failed(stack, s) for s in ("processor", "shadow")} == before
    for service in ("bridge", "processor", "shadow"):
        assert healthz(stack, service) == 200, service
    processor_after = metrics(stack, "processor")
    key = 'ecokit_processor_messages_received_total{kind="telemetry"}'
    assert processor_after[key] - processor_before.get(key, 0) == n_telemetry

    # a valid batch afterwards is stored in full
    n = 500
    with client(stack, DEVICE) as device:
        for i in range(n):
            device.publish(TELEMETRY, telemetry(DEVICE, 1000 + i, ts + 100_000 + i), qos=1)
    wait_for("the valid batch", lambda: stored_telemetry(stack) - stored_before >= stored_t + n, timeout=60)
    assert stored_telemetry(stack) - stored_before == stored_t + n


def _answers(device: Any, expected: int) -> list[str] | None:
    got = getattr(device, "_answers", [])
    for m in device.drain(0.3):
        if m.topic.endswith("/accepted") or m.topic.endswith("/rejected"):
            got.append(m.topic)
    device._answers = got
    return got if len(got) >= expected else None


@pytest.mark.parametrize("level", BROKER_REFUSES)
def test_the_broker_refuses_topics_with_control_characters(stack: Stack, level: str) -> None:
    topic = f"fleet/{DEVICE}/{level}"
    with client(stack, DEVICE) as device:
        device.client.publish(topic, b"x", qos=1)
        reason = device.disconnects.get(timeout=10)
        assert reason.is_failure or reason == 0, reason
    with client(stack, DEVICE) as device:  # the device may connect again
        assert not device.publish(TELEMETRY, fix(0, int(time.time() * 1000)), qos=1).is_failure
    assert archived_by_topic(stack, {topic}) == 0
    for service in ("bridge", "processor", "shadow"):
        assert healthz(stack, service) == 200, service
