"""The shared rule vectors (rule_vectors.yaml) against both engines, and the EMQX rendering
pinned in a real rendered emqx.conf (parsed with pyhocon)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyhocon import ConfigFactory

from ecokit.config.model import StackConfig
from ecokit.rules import Message, Point, Rejection, RuleEngine
from ecokit.rules.emqx import EmqxRule, render_rules, simulate
from ecokit.rules.lineproto import ParsedPoint, merge_points, parse_line
from ecokit.stack import Stack
from ecokit.testing import write_project

VECTORS = yaml.safe_load((Path(__file__).parent / "rule_vectors.yaml").read_text())
CASES = VECTORS["cases"]
CONFIG = StackConfig.model_validate({"rules": VECTORS["rules"]})
DATABASE = "fleet"


def _payload(case: dict[str, Any]) -> bytes:
    if "payload_b64" in case:
        return base64.b64decode(case["payload_b64"])
    return str(case["payload"]).encode()


def _message(case: dict[str, Any]) -> Message:
    return Message(case["topic"], _payload(case), case.get("qos", 1), case.get("retain", False),
                   case["received_ns"])


def _expected_lines(case: dict[str, Any]) -> list[str]:
    lines = list(case.get("points", []))
    if case.get("archive"):
        lines.append(case["archive"])
    return lines


def _deadletter(case: dict[str, Any], rule: str, reason: str, field: str) -> dict[str, Any]:
    return {"rule": rule, "reason": reason, "field": field, "topic": case["topic"], "qos": case.get("qos", 1),
            "retain": case.get("retain", False), "payload": base64.b64encode(_payload(case)).decode()}


def _points(lines: list[str], precision: str = "ns") -> list[ParsedPoint]:
    return sorted(merge_points([parse_line(line, precision=precision) for line in lines]), key=repr)


@pytest.fixture(scope="module")
def engine() -> RuleEngine:
    return RuleEngine(CONFIG.rules)


@pytest.fixture(scope="module")
def emqx_rules() -> list[EmqxRule]:
    return render_rules(CONFIG.rules, database=DATABASE)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bridge_evaluator_matches_the_vector(engine: RuleEngine, case: dict[str, Any]) -> None:
    outcomes = engine.evaluate(_message(case))
    lines = [o.line for o in outcomes if isinstance(o, Point)]
    rejections = [[o.rule, o.reason, o.field] for o in outcomes if isinstance(o, Rejection)]
    assert sorted(lines) == sorted(_expected_lines(case))
    assert rejections == case.get("rejections", [])
    for outcome in outcomes:
        if isinstance(outcome, Rejection):
            assert outcome.topic == f"ecokit/deadletter/{outcome.rule}"
            assert json.loads(outcome.deadletter(_message(case))) == _deadletter(
                case, outcome.rule, outcome.reason, outcome.field)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_emqx_rendering_stores_the_same_points(emqx_rules: list[EmqxRule], case: dict[str, Any]) -> None:
    msg = _message(case)
    effects = simulate(emqx_rules, msg.topic, msg.payload, qos=msg.qos, retain=msg.retain,
                       received_ns=msg.received_ns)
    assert [e for e in effects if e[0] == "exception"] == []
    written: list[ParsedPoint] = []
    for kind, path, body in effects:
        if kind == "http":
            assert path.startswith(f"/write?db={DATABASE}&precision=")
            written.append(parse_line(body, precision=path.rsplit("=", 1)[1]))
    assert sorted(merge_points(written), key=repr) == _points(_expected_lines(case))
    deadletters = [(topic, json.loads(payload)) for kind, topic, payload in effects if kind == "republish"]
    expected = case.get("emqx_rejections", case.get("rejections", []))
    assert deadletters == [(f"ecokit/deadletter/{rule}", _deadletter(case, rule, reason, field))
                           for rule, reason, field in expected]


def test_vectors_cover_every_reason_and_rule() -> None:
    reasons = {r[1] for c in CASES for r in c.get("rejections", [])}
    assert reasons == {"not_json", "missing_field", "wrong_type", "out_of_range", "bad_value"}
    rules = {r[0] for c in CASES for r in c.get("rejections", [])}
    assert rules == {"telemetry", "status", "events", "alerts", "archive", "fuelwatch"}


def test_qos1_redelivery_gives_the_same_telemetry_point(engine: RuleEngine) -> None:
    case = CASES[0]
    first = engine.evaluate(_message(case))
    again = engine.evaluate(Message(case["topic"], _payload(case), 1, False, case["received_ns"] + 5))
    telemetry = [o for o in first + again if isinstance(o, Point) and o.rule == "telemetry"]
    assert len(telemetry) == 2
    assert telemetry[0] == telemetry[1]


# -- the rendered emqx.conf -----------------------------------------------------------


@pytest.fixture(scope="module")
def emqx_conf(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("emqx")
    config_file = write_project(folder, extra={"broker": {"kind": "emqx"}, "rules": VECTORS["rules"]})
    stack = Stack.load(config_file, env={})
    broker = next(s for s in stack.plan("docker") if s.name == "broker")
    text = next(f for f in broker.files if f.relpath == "emqx.conf").content.decode()
    return ConfigFactory.parse_string(text)


def test_emqx_conf_holds_exactly_the_rendered_rules(emqx_conf: Any) -> None:
    stack_rules = render_rules(CONFIG.rules, database="fleet")
    conf_rules = emqx_conf["rule_engine"]["rules"]
    assert list(conf_rules.keys()) == [r.id for r in stack_rules]
    for rule in stack_rules:
        conf = conf_rules[rule.id]
        assert conf["sql"] == rule.sql()
        assert conf["enable"] is True
        if rule.http is not None:
            assert list(conf["actions"]) == [rule.http.ref]
            action = emqx_conf["actions"]["http"][rule.http.name]
            assert action["connector"] == "ecokit_influxdb"
            assert action["parameters"]["body"] == rule.http.body
            assert action["parameters"]["path"] == rule.http.path
            assert action["parameters"]["method"] == "post"
        else:
            assert rule.republish is not None
            (republish,) = conf["actions"]
            assert republish["function"] == "republish"
            assert republish["args"]["topic"] == rule.republish.topic
            assert republish["args"]["payload"] == rule.republish.payload
            assert republish["args"]["qos"] == 1


def test_emqx_connector_writes_to_influxdb_v1_api_with_the_token(emqx_conf: Any) -> None:
    connector = emqx_conf["connectors"]["http"]["ecokit_influxdb"]
    assert connector["url"] == "http://influxdb:8086"
    assert connector["headers"]["Authorization"].startswith("Token ")


def test_emqx_telemetry_rule_is_pinned(emqx_conf: Any) -> None:
    rules = emqx_conf["rule_engine"]["rules"]
    assert rules["ecokit_telemetry"]["sql"].startswith(
        "SELECT replace(replace(replace(nth(2, split(topic, '/', 'notrim')), ',', '\\,'), '=', '\\='), ' ', '\\ ')"
        " AS t_vehicle, map_get('lat', payload) AS f_lat,")
    assert rules["ecokit_telemetry"]["sql"].endswith(
        "AND NOT map_get('ts', payload) < 946684800000 AND NOT map_get('ts', payload) > 4102444800000")
    body = emqx_conf["actions"]["http"]["ecokit_telemetry"]["parameters"]["body"]
    assert body == ("telemetry,vehicle=${t_vehicle} lat=${f_lat},lng=${f_lng},speed=${f_speed},heading=${f_heading},"
                    "fuel=${f_fuel},odometer=${f_odometer},engine=${f_engine},seq=${f_seq}i,"
                    "status=\"${f_status}\" ${ts}")
    assert emqx_conf["actions"]["http"]["ecokit_telemetry"]["parameters"]["path"] == "/write?db=fleet&precision=ms"
    archive = emqx_conf["actions"]["http"]["ecokit_archive"]["parameters"]
    assert archive["body"] == "archive,topic=${t_topic} payload=\"${f_payload}\",qos=${f_qos}i,retain=${f_retain} ${ts}"
    assert archive["path"] == "/write?db=fleet&precision=ns"
    assert ("subbits(hexstr2bin(id), 1, 64) * 1000 + mod(subbits(hexstr2bin(id), 113, 16), 1000) AS ts"
            in rules["ecokit_archive"]["sql"])


def test_emqx_sql_avoids_what_the_rule_sql_parser_mangles() -> None:
    # rulesql trims every leading/trailing ' and " of a string literal, drops "\n/", and
    # treats "--" as a comment; payload.x raises on non-JSON payloads.
    import re

    for rule in render_rules(CONFIG.rules, database="fleet"):
        sql = rule.sql()
        assert "\n" not in sql
        assert "--" not in sql
        assert "payload." not in sql
        for literal in re.findall(r"'([^']*)'", sql):
            assert not literal.startswith('"'), literal
            assert not literal.endswith('"'), literal


def test_no_bridge_when_the_broker_is_emqx(tmp_path: Path) -> None:
    stack = Stack.load(write_project(tmp_path, extra={"broker": {"kind": "emqx"}}), env={})
    assert "bridge" not in [s.name for s in stack.plan("docker")]
    assert "processor" in [s.name for s in stack.plan("docker")]
