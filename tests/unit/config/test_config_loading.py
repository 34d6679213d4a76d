"""ecokit.yaml: defaults, validation errors that name file + key + expectation, precedence,
profiles (builtin, in ecokit.yaml, in profiles/NAME.yaml) and the profile recorded by `up`."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecokit.config.loader import builtin_profiles, load_config
from ecokit.config.model import StackConfig
from ecokit.errors import ConfigError
from ecokit.stack import Stack


@pytest.fixture(autouse=True)
def _in_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Files in the current folder are named by their bare name in errors.
    monkeypatch.chdir(tmp_path)


def write(folder: Path, text: str, name: str = "ecokit.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_error(path: Path | None, **kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    return info.value


# -- defaults -----------------------------------------------------------------------------


def test_empty_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "")).config
    assert cfg == StackConfig()
    assert cfg.stack == "ecokit"
    assert cfg.runtime == "auto"
    assert cfg.bind == "127.0.0.1"
    assert cfg.broker.kind == "mosquitto"
    assert cfg.broker.ports.model_dump() == {"mqtt": 1883, "mqtts": 8883, "ws": 8083, "wss": 8084,
                                             "dashboard": 18083}
    assert cfg.influxdb.port == 8086
    assert cfg.influxdb.database == "fleet"
    assert cfg.tls.enabled is False
    assert cfg.tls.mtls is False
    assert cfg.tls.min_version == "1.2"
    assert cfg.auth.anonymous is False, "anonymous access is never a default"
    # Mosquitto's own default (1000) silently drops QoS 1 messages to slow subscribers.
    assert cfg.broker.max_queued_messages > 1000


def test_default_images_are_pinned_to_the_licence_safe_lines() -> None:
    images = StackConfig().images
    assert images.emqx.startswith("emqx/emqx:5.8.")
    assert images.influxdb.startswith("influxdb:2.7.")
    assert images.grafana.startswith("grafana/grafana:12.4.")
    for ref in images.model_dump().values():
        assert ":" in ref.rsplit("/", 1)[-1]
        assert not ref.endswith(":latest")


def test_missing_config_file_loads_defaults_for_the_project_folder(tmp_path: Path) -> None:
    loaded = load_config(None, project_dir=tmp_path)
    assert loaded.config == StackConfig()
    assert loaded.project_dir == tmp_path.resolve()
    assert loaded.config_file is None


def test_relative_paths_resolve_against_the_project_folder(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path / "proj", "certs: {dir: my-certs}\n"))
    assert loaded.path(loaded.config.certs.dir) == (tmp_path / "proj" / "my-certs").resolve()
    assert loaded.path("/abs/x") == Path("/abs/x")


# -- errors name the file, the key path and what was expected -----------------------------


def test_unknown_key_suggests_the_closest_known_key(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "broker:\n  ports:\n    mqt: 1884\n"))
    assert str(err) == "ecokit.yaml: broker.ports.mqt: unknown key; did you mean 'mqtt'?"
    assert err.source == "ecokit.yaml"
    assert err.key == "broker.ports.mqt"


def test_unknown_top_level_section_suggests_the_section(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "brokr:\n  kind: emqx\n"))
    assert "brokr: unknown key; did you mean 'broker'?" in str(err)


def test_unknown_key_without_a_close_match_lists_the_allowed_keys(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "tls:\n  zzzzzz: true\n"))
    assert "tls.zzzzzz: unknown key; expected one of: enabled, mtls, min_version, plain_listener" in str(err)


def test_wrong_type_names_key_and_expected_type(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "broker:\n  ports:\n    mqtt: abc\n"))
    assert err.key == "broker.ports.mqtt"
    assert "valid integer" in str(err)
    assert "(got 'abc')" in str(err)


def test_out_of_range_port_is_refused_with_the_bound(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "influxdb:\n  port: 70000\n"))
    assert str(err).startswith("ecokit.yaml: influxdb.port: ")
    assert "less than or equal to 65535" in str(err)
    assert "70000" in str(err)


def test_port_zero_is_refused(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "grafana:\n  port: 0\n"))
    assert err.key == "grafana.port"
    assert "greater than or equal to 1" in str(err)


def test_value_outside_a_choice_lists_the_choices(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "broker:\n  kind: hivemq\n"))
    assert err.key == "broker.kind"
    assert "'mosquitto' or 'emqx'" in str(err)


def test_duplicate_yaml_key_is_refused_with_its_line_number(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "stack: one\nbroker:\n  kind: mosquitto\n  kind: emqx\n"))
    assert "ecokit.yaml:4:3" in str(err), "the line and column of the second `kind`"
    assert "duplicate key 'kind'" in str(err)


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "stack: a\nbroker: [unclosed\n"))
    assert "ecokit.yaml:" in str(err)
    assert "invalid YAML" in str(err)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "- a\n- b\n"))
    assert "top level must be a mapping" in str(err)


@pytest.mark.parametrize(("image", "expected"), [
    ("emqx/emqx", "has no tag; pin an exact version"),
    ("emqx/emqx:latest", "unpinned"),
    ("Emqx/EMQX:5", "not an image reference"),
])
def test_unpinned_or_malformed_images_are_refused(tmp_path: Path, image: str, expected: str) -> None:
    err = load_error(write(tmp_path, f"images:\n  emqx: {image!r}\n"))
    assert err.key == "images.emqx"
    assert expected in str(err)


@pytest.mark.parametrize("image", [
    "emqx/emqx:5.8.9",
    "registry.example.com:5000/team/emqx:5.8.9",
    "localhost:5000/mosquitto:2.0.22",
    "influxdb@sha256:" + "a" * 64,
])
def test_pinned_images_are_accepted_including_registries_with_a_port(tmp_path: Path, image: str) -> None:
    assert load_config(write(tmp_path, f"images:\n  emqx: {image!r}\n")).config.images.emqx == image


def test_mtls_without_tls_names_the_mtls_key(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "tls:\n  mtls: true\n"))
    assert str(err) == "ecokit.yaml: tls.mtls: mtls: true needs enabled: true"


def test_port_collision_names_both_keys_and_blames_the_one_that_was_set(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "broker:\n  ports:\n    mqtt: 8086\n"))
    assert err.key == "broker.ports.mqtt"
    assert "port 8086 is used by both broker.ports.mqtt and influxdb.port" in str(err)
    assert "{" not in str(err), "no dump of the whole configuration in the message"


def test_port_collision_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, ""), env={"ECOKIT_INFLUXDB__PORT": "1883"})
    assert err.source == "environment ECOKIT_INFLUXDB__PORT"
    assert err.key == "influxdb.port"


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "broker:\n  kind: x\ninfluxdb:\n  port: -1\n"))
    assert "broker.kind" in str(err)
    assert "influxdb.port" in str(err)


@pytest.mark.parametrize(("text", "key"), [
    ("stack: Bad_Name\n", "stack"),
    ("bind: localhost\n", "bind"),
    ("influxdb:\n  retention: forever\n", "influxdb.retention"),
    ("influxdb:\n  retention: 30m\n", "influxdb.retention"),
    ("version: 2\n", "version"),
])
def test_other_invalid_values_name_their_key(tmp_path: Path, text: str, key: str) -> None:
    assert load_error(write(tmp_path, text)).key == key


def test_retention_under_an_hour_is_refused_before_influxdb_refuses_it(tmp_path: Path) -> None:
    # influxd answers "retention policy duration must be at least 1h0m0s" (1.x and 2.x)
    assert "shorter than 1h" in str(load_error(write(tmp_path, "influxdb:\n  retention: 59m\n")))
    for ok in ("0", "1h", "60m", "3600s", "2w"):
        assert load_config(write(tmp_path, f"influxdb:\n  retention: '{ok}'\n")).config.influxdb.retention == ok


# -- precedence: flag > ECOKIT_* environment > profile > file > default --------------------


def test_file_beats_default(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "broker: {ports: {mqtt: 1001}}\n")).config.broker.ports.mqtt == 1001


def test_profile_beats_file(tmp_path: Path) -> None:
    path = write(tmp_path, "broker: {ports: {mqtt: 1001}}\nprofiles:\n  p: {broker: {ports: {mqtt: 1002}}}\n")
    assert load_config(path, profile="p").config.broker.ports.mqtt == 1002


def test_environment_beats_profile(tmp_path: Path) -> None:
    path = write(tmp_path, "broker: {ports: {mqtt: 1001}}\nprofiles:\n  p: {broker: {ports: {mqtt: 1002}}}\n")
    cfg = load_config(path, profile="p", env={"ECOKIT_BROKER__PORTS__MQTT": "1003"}).config
    assert cfg.broker.ports.mqtt == 1003


def test_flag_beats_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "runtime: docker\nbroker: {ports: {mqtt: 1001}}\n")
    cfg = load_config(path, env={"ECOKIT_RUNTIME": "docker", "ECOKIT_BROKER__PORTS__MQTT": "1003"},
                      overrides={"runtime": "local", "broker.ports.mqtt": 1004}).config
    assert cfg.runtime == "local"
    assert cfg.broker.ports.mqtt == 1004


def test_unset_flags_do_not_override(tmp_path: Path) -> None:
    path = write(tmp_path, "runtime: docker\n")
    assert load_config(path, overrides={"runtime": None}).config.runtime == "docker"


def test_layers_merge_key_by_key_not_section_by_section(tmp_path: Path) -> None:
    path = write(tmp_path, "broker: {ports: {mqtt: 1001, mqtts: 1002}}\n")
    cfg = load_config(path, env={"ECOKIT_BROKER__PORTS__MQTT": "1003"}).config
    assert (cfg.broker.ports.mqtt, cfg.broker.ports.mqtts, cfg.broker.ports.ws) == (1003, 1002, 8083)


def test_environment_values_are_parsed_as_yaml_scalars(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={"ECOKIT_TLS__ENABLED": "true", "ECOKIT_STACK": "envstack",
                                                "ECOKIT_BROKER__MAX_QUEUED_MESSAGES": "5"}).config
    assert cfg.tls.enabled is True
    assert cfg.stack == "envstack"
    assert cfg.broker.max_queued_messages == 5


def test_environment_variables_of_the_cli_and_others_are_ignored(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={"ECOKIT_PROFILE": "tls", "ECOKIT_DEBUG": "1",
                                                "ECOKIT_CONFIG": "x.yaml", "PATH": "/bin"}).config
    assert cfg == StackConfig()


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, ""), env={"ECOKIT_BROKER__PORTS__MQTT": "many"})
    assert str(err).startswith("environment ECOKIT_BROKER__PORTS__MQTT: broker.ports.mqtt: ")


def test_unknown_key_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, ""), env={"ECOKIT_BROKER__PORTZ__MQTT": "1"})
    assert err.source == "environment ECOKIT_BROKER__PORTZ__MQTT"
    assert "did you mean 'ports'" in str(err)


def test_empty_environment_key_segment_is_refused(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, ""), env={"ECOKIT_BROKER____MQTT": "1"})
    assert "ECOKIT_BROKER____MQTT" in str(err)


def test_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, ""), overrides={"runtime": "kubernetes"})
    assert str(err).startswith("flag --runtime: runtime: ")


def test_error_in_a_profile_names_the_profile(tmp_path: Path) -> None:
    path = write(tmp_path, "profiles:\n  bad: {broker: {kind: nope}}\n")
    err = load_error(path, profile="bad")
    assert err.source == "ecokit.yaml (profiles.bad)"
    assert err.key == "broker.kind"


# -- profiles ---------------------------------------------------------------------------


def test_builtin_profiles_ship_with_the_package() -> None:
    assert {"default", "tls", "mtls"} <= set(builtin_profiles())


def test_default_profile_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "stack: s\n")
    assert load_config(path, profile="default").config == load_config(path).config


def test_tls_profile_turns_on_tls_without_mtls(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), profile="tls").config
    assert cfg.tls.enabled is True
    assert cfg.tls.mtls is False
    assert cfg.tls.min_version == "1.2"


def test_mtls_profile_requires_client_certificates(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), profile="mtls").config
    assert cfg.tls.enabled is True
    assert cfg.tls.mtls is True


def test_user_profile_in_ecokit_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "profiles:\n  big-queues:\n    broker: {max_queued_messages: 0}\n")
    loaded = load_config(path, profile="big-queues")
    assert loaded.config.broker.max_queued_messages == 0
    assert loaded.profile == "big-queues"


def test_user_profile_in_a_profiles_folder(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    write(tmp_path, "broker:\n  ports: {mqtt: 2883}\n", "profiles/ci.yaml")
    assert load_config(path, profile="ci").config.broker.ports.mqtt == 2883


def test_user_profile_errors_name_the_profile_file(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    write(tmp_path, "broker:\n  knd: emqx\n", "profiles/ci.yaml")
    err = load_error(path, profile="ci")
    assert str(err) == "profiles/ci.yaml: broker.knd: unknown key; did you mean 'kind'?"


def test_user_profile_can_shadow_a_builtin_one(tmp_path: Path) -> None:
    path = write(tmp_path, "profiles:\n  tls: {tls: {enabled: true, min_version: '1.3'}}\n")
    assert load_config(path, profile="tls").config.tls.min_version == "1.3"


def test_unknown_profile_lists_every_known_profile(tmp_path: Path) -> None:
    path = write(tmp_path, "profiles:\n  mine: {}\n")
    write(tmp_path, "{}\n", "profiles/from-folder.yaml")
    err = load_error(path, profile="nope")
    assert "unknown profile 'nope'" in str(err)
    assert err.hint is not None
    for name in ("default", "from-folder", "mine", "mtls", "tls"):
        assert name in err.hint


def test_a_profile_cannot_define_profiles(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    write(tmp_path, "profiles: {x: {}}\n", "profiles/nested.yaml")
    err = load_error(path, profile="nested")
    assert err.key == "profiles"


def test_profile_names_are_validated(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "profiles:\n  Bad Name: {}\n"))
    assert err.key == "profiles"


def test_the_profile_recorded_by_up_is_reused_by_later_commands(tmp_path: Path) -> None:
    path = write(tmp_path, "stack: rec\n")
    record = tmp_path / ".ecokit" / "rec" / "profile"
    record.parent.mkdir(parents=True)
    record.write_text("mtls\n")
    stack = Stack.load(path, env={})
    assert stack.loaded.profile == "mtls"
    assert stack.config.tls.mtls is True
    # An explicit profile still wins over the recorded one.
    assert Stack.load(path, profile="default", env={}).config.tls.enabled is False


def test_without_a_recorded_profile_no_profile_applies(tmp_path: Path) -> None:
    stack = Stack.load(write(tmp_path, "stack: rec\n"), env={})
    assert stack.loaded.profile is None
    assert stack.config.tls.enabled is False


def test_stack_load_without_ecokit_yaml_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Stack.load(project_dir=tmp_path, env={})
    assert "no ecokit.yaml" in str(info.value)
    assert info.value.hint is not None
    assert "ecokit init" in info.value.hint


def test_stack_load_finds_ecokit_yaml_in_a_parent_folder(tmp_path: Path) -> None:
    write(tmp_path, "stack: parent\n")
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    stack = Stack.load(project_dir=tmp_path / "sub" / "dir", env={})
    assert stack.config.stack == "parent"
    assert stack.project_dir == tmp_path.resolve()
