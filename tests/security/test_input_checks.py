"""Hole 7 against the running stack: a device cannot create shadows without bound, and
`ecokit devices add` refuses an id with a final newline or a reserved name in another letter
case, leaving the broker's password file as it was."""

from __future__ import annotations

import json

import pytest
from security_support import client, project_of

from ecokit.cli import main
from ecokit.stack import Stack


def test_a_device_may_keep_25_named_shadows_and_no_more(stack: Stack) -> None:
    reported = b'{"state":{"reported":{"ok":true}}}'
    with client(stack, "v2") as v2:
        v2.subscribe("things/v2/shadow/name/+/update/+")
        for i in range(26):
            v2.publish(f"things/v2/shadow/name/s{i}/update", reported, qos=1)
        # each accepted update also has its update/documents: 25 x 2 + 1 rejected
        answers = [m for m in v2.expect(51, timeout=20) if m.topic.endswith(("/accepted", "/rejected"))]
        rejected = [m for m in answers if m.topic.endswith("/rejected")]
        assert len(answers) == 26
        assert [m.topic for m in rejected] == ["things/v2/shadow/name/s25/update/rejected"]
        doc = json.loads(rejected[0].payload)
        assert (doc["code"], doc["message"]) == (400, "Maximum number of named shadows for this thing reached (25)")
        # an existing one may still be updated, and the classic shadow does not count
        v2.subscribe("things/v2/shadow/update/+")
        v2.publish("things/v2/shadow/name/s3/update", reported, qos=1)
        v2.publish("things/v2/shadow/update", reported, qos=1)
        topics = {m.topic for m in v2.expect(4, timeout=10)}
        assert {"things/v2/shadow/name/s3/update/accepted", "things/v2/shadow/update/accepted"} <= topics
        assert not [t for t in topics if t.endswith("/rejected")]

@pytest.mark.parametrize("device_id", ["evil\n", "ECOKIT-admin", "Broadcast", "V1"])
def test_devices_add_refuses_what_would_corrupt_or_shadow_an_identity(stack: Stack, device_id: str) -> None:
    passwd = stack.paths.config_dir / "broker" / "passwd"
    assert passwd.exists()
    before = passwd.read_bytes()
    code = main(["devices", "add", "-c", str(project_of(stack)), device_id])
    assert code != 0
    assert passwd.read_bytes() == before
    assert device_id not in [d.id for d in Stack.load(project_of(stack)).devices()]
