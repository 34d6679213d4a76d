"""A Docker engine and images for tests, on a machine that reaches no image registry.

- :class:`PrivateDockerd` starts a dockerd of its own (vfs storage, private socket,
  exec-root and pidfile under a temp dir, no default bridge) and stops it by pid, so it
  never touches another engine on the machine.
- :func:`build_test_images` builds what the docker runtime needs from the distribution:
  a minimal Debian rootfs (debootstrap) carrying mosquitto, influxdb 1.x and python3,
  imported as one base image, and the ecokit image built from ``infra/Dockerfile`` on top
  of it with wheels made on this machine. Images are tagged by a hash of their inputs and
  reused while the inputs do not change (the engine's data-root is a cache folder).

Used by the ``docker`` tests (``tests/integration/docker``); usable by anyone's CI.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ecokit.errors import EngineError, RuntimeUnavailable
from ecokit.runtime.docker.engine import Engine

SUITE = "bookworm"
BASE_PACKAGES = ("mosquitto", "influxdb", "python3", "python3-venv", "ca-certificates")
# Bumped whenever the way the base rootfs is made changes.
BASE_RECIPE = "2"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MOSQUITTO_UID = 1883  # as in the eclipse-mosquitto image
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt/archives",
        "var/lib/apt/lists")

Log = Callable[[str], None]


def _say(message: str) -> None:
    print(f"[docker-lane] {message}", file=sys.stderr, flush=True)


def default_cache_dir() -> Path:
    return Path(os.environ.get("ECOKIT_TEST_CACHE", Path.home() / ".cache" / "ecokit-tests"))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builds of the same cached artefact between processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class PrivateDockerd:
    """A dockerd started and stopped by this process, on a socket nobody else uses."""

    data_root: Path
    run_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ecokit-dockerd-")))
    pid: int | None = None
    _process: subprocess.Popen[bytes] | None = None
    _lock_fd: int | None = None

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "dockerd.log"

    @staticmethod
    def available() -> str | None:
        """None when a private dockerd can start here, else why not."""
        if shutil.which("dockerd") is None:
            return "dockerd is not installed (apt-get install docker.io)"
        if os.geteuid() != 0:
            return "starting a private dockerd needs root"
        return None

    def _claim_data_root(self) -> None:
        """The cached data-root is used by one dockerd at a time; a second one gets a fresh one."""
        self.data_root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_root.parent / f"{self.data_root.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self.data_root = self.run_dir / "data"
            return
        self._lock_fd = fd
        self._stop_orphan()

    @property
    def _pid_record(self) -> Path:
        return self.data_root.parent / f"{self.data_root.name}.pid"

    def _stop_orphan(self) -> None:
        """A dockerd an earlier run started on this data-root and could not stop (the run was
        killed): stop it by its recorded pid, after checking that pid is that very dockerd."""
        try:
            pid = int(self._pid_record.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if f"--data-root={self.data_root}".encode() not in cmdline:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.2)
        if Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for arg in cmdline:
            if arg.startswith(b"--exec-root="):
                run_dir = Path(arg.split(b"=", 1)[1].decode()).parent
                if run_dir.name.startswith("ecokit-dockerd-"):
                    shutil.rmtree(run_dir, ignore_errors=True)

    def start(self, timeout: float = 60.0) -> str:
        reason = self.available()
        if reason:
            raise RuntimeUnavailable(reason)
        self._claim_data_root()
        argv = [
            shutil.which("dockerd") or "dockerd",
            "--storage-driver=vfs",
            f"--data-root={self.data_root}",
            f"--exec-root={self.run_dir / 'exec'}",
            f"--pidfile={self.run_dir / 'dockerd.pid'}",
            f"--host={self.host}",
            "--bridge=none",
            "--log-level=warn",
        ]
        log = self.log_file.open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        self._process = proc
        self.pid = proc.pid
        if self._lock_fd is not None:
            self._pid_record.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeUnavailable(f"dockerd exited with code {proc.returncode}: {self._log_tail()}")
            if self.socket.exists():
                try:
                    Engine.connect({"DOCKER_HOST": self.host}, timeout=5).close()
                    return self.host
                except RuntimeUnavailable:
                    pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeUnavailable(f"dockerd did not answer within {timeout:.0f}s: {self._log_tail()}")

    def _log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the dockerd we started (it stops its containers and its containerd), then wait."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
            self.pid = None
        if self._lock_fd is not None:
            self._pid_record.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None
        shutil.rmtree(self.run_dir, ignore_errors=True)


def debian_mirror(sources: Iterable[Path] = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))) -> str:
    """The Debian mirror this machine's apt uses (debootstrap fetches from the same place)."""
    for source in sources:
        files = sorted(source.glob("*")) if source.is_dir() else [source]
        for path in files:
            if not path.is_file() or path.suffix not in (".sources", ".list", ""):
                continue
            for line in path.read_text(errors="replace").splitlines():
                words = line.split()
                if path.suffix == ".sources" and words[:1] == ["URIs:"] and len(words) > 1:
                    if "security" not in words[1]:
                        return words[1]
                elif words[:1] == ["deb"]:
                    uri = next((w for w in words[1:] if "://" in w), None)
                    if uri and "security" not in uri:
                        return uri
    raise RuntimeUnavailable("no Debian mirror found in the apt sources of this machine")


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:12]


def _set_ids(etc: Path, name: str, uid: int) -> None:
    """Give the system user and group ``name`` the fixed id ``uid`` (as in the upstream image)."""
    for filename, field_index in (("passwd", (2, 3)), ("group", (2,))):
        path = etc / filename
        lines = []
        for line in path.read_text().splitlines():
            parts = line.split(":")
            if parts[0] == name:
                for i in field_index:
                    parts[i] = str(uid)
            lines.append(":".join(parts))
        path.write_text("\n".join(lines) + "\n")


def build_base_rootfs(target_tar: Path, *, log: Log = _say) -> None:
    """debootstrap a minimal Debian with BASE_PACKAGES into a tar (numeric owners)."""
    if shutil.which("debootstrap") is None:
        raise RuntimeUnavailable("debootstrap is not installed (apt-get install debootstrap)")
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=target_tar.parent))
    try:
        rootfs = work / "rootfs"
        mirror = debian_mirror()
        log(f"debootstrap {SUITE} ({', '.join(BASE_PACKAGES)})")
        started = time.monotonic()
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs),
             mirror], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise RuntimeUnavailable(f"debootstrap failed with code {result.returncode}:\n{tail}")
        log(f"debootstrap done in {time.monotonic() - started:.0f}s")
        old = next(line.split(":") for line in (rootfs / "etc/passwd").read_text().splitlines()
                   if line.startswith("mosquitto:"))
        _set_ids(rootfs / "etc", "mosquitto", MOSQUITTO_UID)
        for folder in ("config", "data", "log"):
            path = rootfs / "mosquitto" / folder
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, MOSQUITTO_UID, MOSQUITTO_UID)
        os.chown(rootfs / "mosquitto", MOSQUITTO_UID, MOSQUITTO_UID)
        for path in rootfs.joinpath("var/lib/mosquitto"), rootfs.joinpath("var/log/mosquitto"):
            if path.exists() and path.stat().st_uid == int(old[2]):
                os.chown(path, MOSQUITTO_UID, MOSQUITTO_UID)
        # Debian's mosquitto 2.0.11 block-buffers its log on a pipe, so `docker logs` would
        # stay empty until it exits; the upstream image's build flushes each line.
        binary = rootfs / "usr/sbin/mosquitto"
        binary.rename(rootfs / "usr/sbin/mosquitto.bin")
        binary.write_text('#!/bin/sh\nexec stdbuf -oL -eL /usr/sbin/mosquitto.bin "$@"\n')
        binary.chmod(0o755)
        for rel in TRIM:
            shutil.rmtree(rootfs / rel, ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        tmp = target_tar.with_suffix(".tmp")
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tmp), "."],
                       check=True, capture_output=True)
        os.replace(tmp, target_tar)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class TestImages:
    """Local image tags for a test stack's ``images:`` section."""

    base: str
    ecokit: str

    def config(self) -> dict[str, str]:
        return {"mosquitto": self.base, "influxdb": self.base, "ecokit": self.ecokit}


def ensure_base_image(engine: Engine, cache: Path, *, log: Log = _say) -> str:
    key = _digest(SUITE, ",".join(BASE_PACKAGES), BASE_RECIPE)
    tag = f"ecokit-test/debian:{SUITE}-{key}"
    if engine.image_id(tag):
        return tag
    with _locked(cache / f"base-{key}.lock"):
        tar = cache / f"base-{key}.tar"
        if not tar.exists():
            build_base_rootfs(tar, log=log)
        log(f"importing {tar.name} as {tag}")
        repository, version = tag.split(":")
        with tar.open("rb") as fh:
            engine.client.api.import_image(src=fh, repository=repository, tag=version,
                                           changes=[f"ENV PATH={SYSTEM_PATH}", 'CMD ["/bin/sh"]'])
    if not engine.image_id(tag):
        raise EngineError(f"import {tag}", "the image is not there after the import")
    # Older recipes' images and rootfs tars are only taking space now.
    for old in cache.glob("base-*.tar"):
        if old.name != f"base-{key}.tar":
            old.unlink()
    for image in engine.client.images.list(name="ecokit-test/debian"):
        if tag not in image.tags:
            with contextlib.suppress(Exception):
                engine.client.images.remove(image.id, force=True)
    return tag


ECOKIT_SOURCES = ("pyproject.toml", "README.md", "ecokit", "templates", "dashboards", "infra")


def _source_files(source: Path) -> list[Path]:
    files: list[Path] = []
    for name in ECOKIT_SOURCES:
        path = source / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(p for p in path.rglob("*")
                            if p.is_file() and "__pycache__" not in p.parts and "wheels" not in p.parts)
    return files


def build_wheels(source: Path, wheels: Path, *, log: Log = _say) -> None:
    """ecokit's wheel and every dependency's, made on this machine (no index needed later)."""
    wheels.mkdir(parents=True, exist_ok=True)
    for old in wheels.glob("ecokit-*.whl"):
        old.unlink()
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(source)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeUnavailable(f"pip wheel failed: {result.stderr.strip()[-2000:]}")
    log(f"wheels ready in {time.monotonic() - started:.0f}s ({len(list(wheels.glob('*.whl')))} wheels)")


def ensure_ecokit_image(engine: Engine, base: str, source: Path, cache: Path, *, log: Log = _say) -> str:
    """Build infra/Dockerfile on ``base`` with wheels from this machine; reuse it while the
    sources do not change."""
    files = _source_files(source)
    key = _digest(base, *(f"{p.relative_to(source)}:{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in files))
    tag = f"ecokit-test/ecokit:{key}"
    if engine.image_id(tag):
        return tag
    wheels = cache / "wheels"
    build_wheels(source, wheels, log=log)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        context = Path(tmp)
        for path in files:
            target = context / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        (context / "infra/wheels").mkdir(parents=True, exist_ok=True)
        for wheel in sorted(wheels.glob("*.whl")):
            shutil.copy2(wheel, context / "infra/wheels" / wheel.name)
        log(f"building {tag} from infra/Dockerfile")
        started = time.monotonic()
        # The same Engine.build as `ecokit up` uses, offline: base image and wheels from here.
        engine.build(context, "infra/Dockerfile", tag, network_mode="none",
                     buildargs={"BASE_IMAGE": base, "ECOKIT_SPEC": "ecokit",
                                "PIP_OPTIONS": "--no-index --find-links /src/infra/wheels"})
    log(f"ecokit image built in {time.monotonic() - started:.0f}s")
    for image in engine.client.images.list(name="ecokit-test/ecokit"):
        if tag not in image.tags:
            with contextlib.suppress(Exception):
                engine.client.images.remove(image.id, force=True)
    return tag


def build_test_images(engine: Engine, source: Path, cache: Path | None = None, *, log: Log = _say) -> TestImages:
    cache = cache or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    base = ensure_base_image(engine, cache, log=log)
    ecokit = ensure_ecokit_image(engine, base, source, cache, log=log)
    return TestImages(base=base, ecokit=ecokit)


def registry_binary(cache: Path) -> Path:
    """Debian's docker-registry (distribution), installed or unpacked from its package into
    ``cache`` (no service is installed or started)."""
    installed = shutil.which("docker-registry")
    if installed:
        return Path(installed)
    target = cache / "docker-registry" / "usr/bin/docker-registry"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        result = subprocess.run(["apt-get", "download", "docker-registry"], cwd=tmp, capture_output=True, text=True,
                                check=False)
        debs = list(Path(tmp).glob("docker-registry_*.deb"))
        if result.returncode != 0 or not debs:
            raise RuntimeUnavailable(f"cannot fetch Debian's docker-registry package: {result.stderr.strip()[-500:]}")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(cache / "docker-registry")], check=True,
                       capture_output=True)
    return target


@dataclass
class LocalRegistry:
    """An image registry on 127.0.0.1 (the engine allows plain HTTP to loopback registries)."""

    binary: Path
    port: int
    root: Path
    _process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> LocalRegistry:
        import requests

        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
                          f"http:\n  addr: {self.address}\n")
        log = (self.root / "registry.log").open("ab")
        self._process = subprocess.Popen([str(self.binary), "serve", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeUnavailable(f"docker-registry exited: {(self.root / 'registry.log').read_text()[-500:]}")
            try:
                if requests.get(f"http://{self.address}/v2/", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeUnavailable(f"docker-registry did not answer on {self.address}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


@dataclass
class DockerLane:
    """An engine for tests: the one DOCKER_HOST points at, else a private dockerd."""

    host: str
    engine: Engine
    private: PrivateDockerd | None = None
    started_in: float = 0.0
    notes: list[str] = field(default_factory=list)
    images: TestImages = TestImages("", "")

    def build_images(self, source: Path, cache: Path | None = None, *, log: Log = _say) -> TestImages:
        self.images = build_test_images(self.engine, source, cache, log=log)
        return self.images

    @classmethod
    def open(cls, environment: dict[str, str], cache: Path | None = None, *, log: Log = _say) -> DockerLane:
        """Use the engine the environment names if it answers; otherwise start a private one."""
        started = time.monotonic()
        cache = cache or default_cache_dir()
        if environment.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists():
            try:
                engine = Engine.connect(environment)
                host = environment.get("DOCKER_HOST", "unix:///var/run/docker.sock")
                return cls(host, engine, None, time.monotonic() - started, [f"using the engine at {host}"])
            except RuntimeUnavailable as exc:
                log(f"the configured engine does not answer ({exc}); starting a private dockerd")
        private = PrivateDockerd(cache / "dockerd")
        host = private.start()
        engine = Engine.connect({"DOCKER_HOST": host})
        lane = cls(host, engine, private, time.monotonic() - started,
                   [f"started a private dockerd (pid {private.pid}, {host}, data-root {private.data_root})"])
        lane.clean()
        return lane

    def clean(self) -> None:
        """Remove what crashed runs left in a private engine (every object there is ours)."""
        if self.private is None:
            return
        client = self.engine.client
        for container in client.containers.list(all=True):
            with contextlib.suppress(Exception):
                container.remove(force=True)
        with contextlib.suppress(Exception):
            client.networks.prune()
        with contextlib.suppress(Exception):
            client.volumes.prune()
        with contextlib.suppress(Exception):
            client.images.prune(filters={"dangling": True})

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.engine.close()
        if self.private is not None:
            self.private.stop()

    def leftovers(self, labels: dict[str, str]) -> dict[str, list[str]]:
        """Objects still carrying ``labels``: what `down` should have removed."""
        found: dict[str, list[str]] = {
            "containers": [c.name for c in self.engine.containers(labels)],
            "networks": [n.name for n in self.engine.networks(labels)],
            "volumes": [v.name for v in self.engine.volumes(labels)],
        }
        return found

