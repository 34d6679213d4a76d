"""Images the engine does not have are pulled, pinned only, with progress: against a real
registry (Debian's docker-registry on 127.0.0.1, where the engine allows plain HTTP)."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecokit.errors import ConfigError, EcokitError, EngineError
from ecokit.runtime.base import ReadinessContext, ServiceEvent
from ecokit.runtime.docker import DockerRuntime, Engine, PullProgress
from ecokit.services.spec import ContainerSpec, ServiceSpec
from ecokit.stack import Stack
from ecokit.testing import free_port, write_project
from ecokit.testing.docker_lane import DockerLane, LocalRegistry, default_cache_dir, registry_binary

PAYLOAD = 6_000_000


@pytest.fixture
def registry(tmp_path: Path, docker_lane: DockerLane) -> Iterator[LocalRegistry]:
    try:
        binary = registry_binary(default_cache_dir())
    except EcokitError as exc:  # depends on the machine reaching Debian's packages
        if os.environ.get("ECOKIT_REQUIRE_DOCKER") == "1":
            pytest.fail(f"no docker-registry for the pull tests: {exc}", pytrace=False)
        pytest.skip(f"no docker-registry for the pull tests: {exc}")
    reg = LocalRegistry(binary, free_port(), tmp_path / "registry").start()
    try:
        yield reg
    finally:
        reg.stop()


def push_payload_image(engine: Engine, ref: str) -> None:
    """A small image (one incompressible 6 MB layer) pushed to the registry, then removed here."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("payload.bin")
        info.size = PAYLOAD
        tar.addfile(info, io.BytesIO(os.urandom(PAYLOAD)))
    repository, tag = ref.rsplit(":", 1)
    engine.client.api.import_image(src=buffer.getvalue(), repository=repository, tag=tag)
    for event in engine.client.images.push(repository, tag=tag, stream=True, decode=True):
        assert "error" not in event, event
    engine.client.images.remove(ref, force=True)
    assert engine.image_id(ref) is None


def test_a_missing_image_is_pulled_with_byte_progress(docker_lane: DockerLane, registry: LocalRegistry) -> None:
    engine = docker_lane.engine
    ref = f"{registry.address}/ecokit-test/payload:1.0"
    push_payload_image(engine, ref)
    events: list[PullProgress] = []
    image_id = engine.pull(ref, events.append, every=0)
    assert engine.image_id(ref) == image_id
    assert any(e.total >= PAYLOAD * 0.9 and e.done > 0 for e in events), events[-3:]
    assert events[-1].describe().startswith(f"{ref}: ")
    # Present now: nothing to pull the second time.
    assert engine.ensure_image(ref, events.append) == image_id


def test_the_runtime_reports_pulls_as_service_events(tmp_path: Path, docker_lane: DockerLane,
                                                     registry: LocalRegistry) -> None:
    engine = docker_lane.engine
    ref = f"{registry.address}/ecokit-test/payload:2.0"
    push_payload_image(engine, ref)
    stack = Stack.load(write_project(tmp_path / "p", stack="pull", extra={"runtime": "docker"}), env={})
    runtime = DockerRuntime(stack.docker_settings(), ReadinessContext("127.0.0.1"), engine=engine)
    events: list[ServiceEvent] = []
    spec = ServiceSpec(name="payload", role="ecokit", description="", container=ContainerSpec(ref))
    images = runtime._ensure_images([spec], events.append)
    assert images == {ref: engine.image_id(ref)}
    assert [e.phase for e in events] == ["pulling"] * len(events)
    assert events[0].detail == ref
    assert any("MB" in e.detail for e in events)


def test_an_image_no_registry_has_fails_with_what_the_engine_said(docker_lane: DockerLane,
                                                                  registry: LocalRegistry) -> None:
    ref = f"{registry.address}/ecokit-test/absent:9.9.9"
    with pytest.raises(EngineError) as caught:
        docker_lane.engine.ensure_image(ref)
    assert f"pull {ref} failed" in str(caught.value)
    assert "absent" in caught.value.explanation or "not found" in caught.value.explanation.lower()
    assert caught.value.hint is not None
    assert "docker load / docker build" in caught.value.hint


def test_an_unpinned_image_is_refused_before_asking_the_engine(docker_lane: DockerLane) -> None:
    with pytest.raises(ConfigError, match="unpinned"):
        docker_lane.engine.ensure_image("ecokit-test/debian:latest")
    with pytest.raises(ConfigError, match="no tag"):
        docker_lane.engine.pull("ecokit-test/debian")


def test_a_missing_ecokit_image_is_built_from_the_source_tree(tmp_path: Path, docker_lane: DockerLane,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from ecokit.runtime.docker import runtime as runtime_module

    # A source tree whose infra/Dockerfile needs nothing from outside (the real one needs
    # a registry for its base image and PyPI; the lane builds that one offline itself).
    source = tmp_path / "src"
    (source / "infra").mkdir(parents=True)
    (source / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (source / "infra" / "Dockerfile").write_text(
        f"FROM {docker_lane.images.base}\nCOPY pyproject.toml /src/\nRUN test -f /src/pyproject.toml\n")
    monkeypatch.setattr(runtime_module, "ecokit_source_tree", lambda: source)
    tag = f"ecokit-test/autobuild:{os.urandom(4).hex()}"
    stack = Stack.load(write_project(tmp_path / "p", stack="build", extra={"runtime": "docker",
                                                                          "images": {"ecokit": tag}}), env={})
    runtime = DockerRuntime(stack.docker_settings(), ReadinessContext("127.0.0.1"), engine=docker_lane.engine)
    spec = ServiceSpec(name="bridge", role="ecokit", description="", container=ContainerSpec(tag))
    events: list[ServiceEvent] = []
    try:
        images = runtime._ensure_images([spec], events.append)
        assert images[tag] == docker_lane.engine.image_id(tag)
        assert {e.phase for e in events} == {"building"}
        assert any("Step 3/3" in e.detail for e in events)
    finally:
        docker_lane.engine.client.images.remove(tag, force=True)
