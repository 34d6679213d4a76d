"""The device registry and extra users: id rules, duplicates, shorthand, safe appends."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ecokit.config.registry import Device, User, append_devices, load_devices, load_users
from ecokit.errors import ConfigError
from ecokit.stack import Stack
from ecokit.testing import write_project


def devices_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "devices.yaml"
    path.write_text(text)
    return path


# -- device ids ----------------------------------------------------------------------------


@pytest.mark.parametrize("device_id", ["vehicle-0001", "truck_7", "a", "A.b-c_d", "0001", "x" * 64])
def test_valid_device_ids(device_id: str) -> None:
    assert Device(id=device_id).id == device_id


@pytest.mark.parametrize("device_id", [
    "", "fleet/1", "a+b", "a#", "-leading", ".hidden", "has space", "x" * 65, "ümlaut", "a\0b",
])
def test_device_ids_that_would_break_topics_or_acls_are_refused(device_id: str) -> None:
    with pytest.raises(ValueError, match="is not a device id"):
        Device(id=device_id)


@pytest.mark.parametrize("device_id", ["ecokit-admin", "ecokit-anything", "broadcast",
                                       "ECOKIT-admin", "Ecokit-Bridge", "Broadcast", "BROADCAST"])
def test_device_ids_reserved_by_ecokit_are_refused_in_any_letter_case(device_id: str) -> None:
    with pytest.raises(ValueError, match="reserved by ecokit"):
        Device(id=device_id)


@pytest.mark.parametrize("name", ["ECOKIT-admin", "Ecokit-x", "broadcast", "Broadcast"])
def test_usernames_reserved_by_ecokit_are_refused_in_any_letter_case(name: str) -> None:
    with pytest.raises(ValueError, match="are ecokit's own"):
        User(username=name)


@pytest.mark.parametrize("value", ["evil\n", "evil\r\n", "ok\nsecond:line", "v1\x00"])
def test_a_final_newline_does_not_pass_for_a_valid_id(value: str) -> None:
    # `$` in a Python regex also matches before a final newline; such an id would add a
    # line to the Mosquitto password file.
    with pytest.raises(ValueError, match="is not a device id"):
        Device(id=value)
    with pytest.raises(ValueError, match="is not a username"):
        User(username=value)


def test_ids_differing_only_in_letter_case_are_duplicates(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "devices:\n  - vehicle-1\n  - Vehicle-1\n")
    with pytest.raises(ConfigError, match="ignoring letter case"):
        load_devices(path)


def test_appending_an_id_that_differs_only_in_case_is_refused(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "devices:\n  - vehicle-1\n")
    before = path.read_text()
    assert append_devices(path, ["vehicle-1"]) == []
    with pytest.raises(ConfigError, match="ignoring letter case"):
        append_devices(path, ["VEHICLE-1"])
    with pytest.raises(ConfigError, match="is not a device id"):
        append_devices(path, ["evil\n"])
    assert path.read_text() == before


def test_device_password_must_have_eight_characters() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        Device(id="v1", password="short")
    assert Device(id="v1", password="long enough").password == "long enough"


# -- loading -------------------------------------------------------------------------------


def test_missing_or_empty_registry_has_no_devices(tmp_path: Path) -> None:
    assert load_devices(tmp_path / "absent.yaml") == []
    assert load_devices(devices_file(tmp_path, "")) == []
    assert load_devices(devices_file(tmp_path, "devices:\n")) == []
    assert load_devices(devices_file(tmp_path, "devices: []\n")) == []


def test_shorthand_entries_are_ids(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "devices:\n  - v1\n  - id: v2\n    password: secret-pw\n    meta: {model: van}\n")
    devices = load_devices(path)
    assert [d.id for d in devices] == ["v1", "v2"]
    assert devices[0].password is None
    assert devices[1].password == "secret-pw"
    assert devices[1].meta == {"model": "van"}


def test_duplicate_device_ids_name_both_entries(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "devices:\n  - v1\n  - v2\n  - id: v1\n")
    with pytest.raises(ConfigError) as info:
        load_devices(path, "config/devices.yaml")
    assert str(info.value) == "config/devices.yaml: devices[2].id: duplicate id 'v1' (first at devices[0])"


def test_invalid_entry_names_its_index_and_key(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "devices:\n  - v1\n  - id: 'bad/id'\n")
    with pytest.raises(ConfigError) as info:
        load_devices(path, "devices.yaml")
    assert str(info.value).startswith("devices.yaml: devices[1].id: ")
    assert "not a device id" in str(info.value)


def test_unknown_key_in_an_entry_lists_the_allowed_keys(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "devices:\n  - id: v1\n    pasword: xxxxxxxxx\n")
    with pytest.raises(ConfigError) as info:
        load_devices(path, "devices.yaml")
    assert "devices[0].pasword: unknown key; expected one of: id, password, cert, meta" in str(info.value)


@pytest.mark.parametrize("text", ["vehicles: [a]\n", "- a\n", "devices: {a: 1}\n", "devices: [a]\nother: 1\n"])
def test_registry_with_the_wrong_shape_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"devices\.yaml"):
        load_devices(devices_file(tmp_path, text))


def test_duplicate_yaml_keys_in_the_registry_are_refused(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "devices:\n  - id: v1\n    id: v2\n")
    with pytest.raises(ConfigError, match="duplicate key 'id'"):
        load_devices(path)


# -- appending keeps the file as people wrote it -------------------------------------------


def test_append_keeps_comments_and_layout(tmp_path: Path) -> None:
    original = ("# Our test fleet.\n"
                "devices:\n"
                "    # the first van\n"
                "    - id: van-1   # keep this comment\n"
                "      meta: {model: e-van}\n"
                "    - van-2\n"
                "# trailing comment\n")
    path = devices_file(tmp_path, original)
    assert append_devices(path, ["van-3", "van-4"]) == ["van-3", "van-4"]
    text = path.read_text()
    assert text.startswith(original), "existing text is kept byte for byte"
    assert text[len(original):] == "    - id: van-3\n    - id: van-4\n", "same indentation as the list"
    assert [d.id for d in load_devices(path)] == ["van-1", "van-2", "van-3", "van-4"]


def test_append_skips_ids_already_registered(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "devices:\n  - v1\n")
    assert append_devices(path, ["v1", "v2", "v2"]) == ["v2"]
    assert append_devices(path, ["v1", "v2"]) == []
    assert [d.id for d in load_devices(path)] == ["v1", "v2"]


def test_append_creates_a_missing_registry(tmp_path: Path) -> None:
    path = tmp_path / "config" / "devices.yaml"
    assert append_devices(path, ["v1"]) == ["v1"]
    assert yaml.safe_load(path.read_text()) == {"devices": [{"id": "v1"}]}


def test_append_to_a_comment_only_file_keeps_the_comments(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "# devices go here\n# one per line\n")
    append_devices(path, ["v1"])
    assert path.read_text() == "# devices go here\n# one per line\ndevices:\n  - id: v1\n"


def test_append_to_an_empty_inline_list_keeps_its_comment(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "# header\ndevices: []  # none yet\n# footer\n")
    append_devices(path, ["v1"])
    text = path.read_text()
    assert "# header" in text
    assert "# none yet" in text
    assert "# footer" in text
    assert [d.id for d in load_devices(path)] == ["v1"]


def test_append_with_a_file_without_trailing_newline(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "devices:\n  - v1")
    append_devices(path, ["v2"])
    assert [d.id for d in load_devices(path)] == ["v1", "v2"]


@pytest.mark.parametrize("device_id", ["0001", "1.5", "true", "null", "1e3", "0x1F"])
def test_append_quotes_ids_yaml_would_read_as_numbers_or_keywords(tmp_path: Path, device_id: str) -> None:
    path = devices_file(tmp_path, "devices:\n  - v1\n")
    assert append_devices(path, [device_id]) == [device_id]
    assert [d.id for d in load_devices(path)] == ["v1", device_id]


def test_append_validates_every_id_before_writing(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "devices:\n  - v1\n")
    with pytest.raises(ConfigError, match="cannot add device: 'bad/id' is not a device id"):
        append_devices(path, ["v2", "bad/id"])
    assert path.read_text() == "devices:\n  - v1\n"


@pytest.mark.parametrize("text", [
    "devices: [v1, v2]\n",                 # flow style: appending lines would not extend it
    "devices: [\n  v1\n]\n",
    "devices:\n  - v1\nextra: 1\n",        # not a registry (refused on load)
])
def test_append_refuses_to_corrupt_a_file_it_cannot_append_to(tmp_path: Path, text: str) -> None:
    path = devices_file(tmp_path, text)
    with pytest.raises(ConfigError):
        append_devices(path, ["v9"])
    assert path.read_text() == text, "the file is untouched"
    assert not list(tmp_path.glob("*.tmp"))


def test_append_refuses_a_file_with_another_top_level_key_before_devices(tmp_path: Path) -> None:
    # A mapping that loads as a registry only once `devices:` exists would be a silent rewrite.
    path = devices_file(tmp_path, "# fleet\nvehicles:\n  - v1\n")
    with pytest.raises(ConfigError):
        append_devices(path, ["v9"])
    assert path.read_text() == "# fleet\nvehicles:\n  - v1\n"


@pytest.mark.parametrize("text", ["devices:\n  - v1\nextra: 1\n", "devices:\n- v1\nextra: 1\n",
                                  "devices:\n- v1\n---\ndevices: []\n"])
def test_append_refuses_what_follows_the_list_even_without_parsing_the_file_again(tmp_path: Path,
                                                                                 text: str) -> None:
    path = devices_file(tmp_path, text)
    with pytest.raises(ConfigError, match="without rewriting the file"):
        append_devices(path, ["v9"], registered=[Device(id="v1")])
    assert path.read_text() == text


def test_append_to_a_list_at_indent_zero(tmp_path: Path) -> None:
    path = devices_file(tmp_path, "devices:\n- v1\n- id: v2\n  password: pw-of-v2-xyz\n# end\n")
    assert append_devices(path, ["v3"], registered=load_devices(path)) == ["v3"]
    assert path.read_text().endswith("# end\n- id: v3\n")
    assert [d.id for d in load_devices(path)] == ["v1", "v2", "v3"]


def test_a_comment_mentioning_devices_does_not_confuse_the_indentation(tmp_path: Path) -> None:
    original = "# devices: listed below\n# - example\ndevices:\n    - v1\n"
    path = devices_file(tmp_path, original)
    append_devices(path, ["v2"])
    assert path.read_text() == original + "    - id: v2\n"


# -- users ---------------------------------------------------------------------------------


def test_users_with_rights(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("users:\n  - username: dash\n    subscribe: ['fleet/+/telemetry']\n"
                    "    publish: [fleet/broadcast/commands]\n  - username: ops\n    superuser: true\n")
    users = load_users(path)
    assert users[0].subscribe == ("fleet/+/telemetry",)
    assert users[0].publish == ("fleet/broadcast/commands",)
    assert users[1].superuser is True


@pytest.mark.parametrize("topic", ["a/#/b", "a/b#", "a/+b", ""])
def test_user_topic_filters_are_validated(topic: str) -> None:
    with pytest.raises(ValueError, match=r"topic filter|must be a whole"):
        User(username="u1", subscribe=(topic,))


def test_user_names_cannot_take_ecokit_names() -> None:
    with pytest.raises(ValueError, match="ecokit's own"):
        User(username="ecokit-admin")


def test_duplicate_usernames_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("users:\n  - username: u1\n  - username: u1\n")
    with pytest.raises(ConfigError, match=r"users\[1\]\.username: duplicate username 'u1'"):
        load_users(path)


def test_a_user_cannot_share_a_name_with_a_device(tmp_path: Path) -> None:
    path = write_project(tmp_path, devices=["v1", "v2"], users=[{"username": "v2"}])
    stack = Stack.load(path, env={})
    with pytest.raises(ConfigError) as info:
        stack.users()
    assert "config/users.yaml: users[0].username: 'v2' is also a device id" in str(info.value)
    with pytest.raises(ConfigError):
        stack.access_policy()
