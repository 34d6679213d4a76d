"""Service objects over the engine: names, labels, the files a container needs, its config.

Everything here is a pure function of the plan and the stack's certificates, so the
runtime and ``ecokit compose`` describe the very same containers.

Files reach a container through the engine's archive API before it starts (``put_archive``),
with the owner and mode the service needs: EMQX runs as uid 1000 and silently skips a
bootstrap CSV it cannot read, Grafana runs as 472, Mosquitto as 1883. No bind mount, so
no host permission or inode surprises.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ecokit.certs import CertPaths
from ecokit.errors import CertError
from ecokit.render import PathMap
from ecokit.runtime.docker.engine import ContainerConfig
from ecokit.services.plan import ECOKIT_IMAGE_USER
from ecokit.services.spec import RenderedFile, ServiceSpec

LABEL_STACK = "ecokit.stack"
LABEL_SERVICE = "ecokit.service"
LABEL_FINGERPRINT = "ecokit.fingerprint"
LABEL_PROJECT = "ecokit.project"
LABEL_VOLUME = "ecokit.volume"

_CERT_REF = re.compile(re.escape(PathMap.CONTAINER_CERTS) + r"/([A-Za-z0-9._/-]+)")


@dataclass(frozen=True)
class StackNames:
    """Names and labels of one stack's docker objects."""

    stack: str
    project: str = ""

    @property
    def network(self) -> str:
        return f"ecokit-{self.stack}"

    def container(self, service: str) -> str:
        return f"ecokit-{self.stack}-{service}"

    def volume(self, service: str, name: str) -> str:
        return f"ecokit-{self.stack}-{service}-{name}"

    def labels(self, service: str | None = None, **extra: str) -> dict[str, str]:
        labels = {LABEL_STACK: self.stack}
        if self.project:
            labels[LABEL_PROJECT] = self.project
        if service is not None:
            labels[LABEL_SERVICE] = service
        labels.update(extra)
        return labels

    @property
    def selector(self) -> dict[str, str]:
        """The label every object of this stack carries (what `down` looks for)."""
        return {LABEL_STACK: self.stack}


@dataclass(frozen=True)
class ContainerFile:
    """One file placed into a container, with the owner and mode it needs there.
    ``directory``: a folder entry instead (content empty), e.g. a volume's mount point."""

    path: str
    content: bytes
    mode: int
    uid: int
    gid: int
    directory: bool = False


def tar_files(files: Iterable[ContainerFile]) -> bytes:
    """A tar of ``files`` (paths relative to /). No parent entries: a parent that does not
    exist yet is created root-owned 0755 by the engine, and an existing one keeps its owner."""
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in files:
            info = tarfile.TarInfo(str(PurePosixPath(f.path).relative_to("/")))
            info.mode = f.mode
            info.uid, info.gid = f.uid, f.gid
            info.mtime = now
            if f.directory:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(f.content)
                tar.addfile(info, io.BytesIO(f.content))
    return buffer.getvalue()


def cert_references(spec: ServiceSpec) -> list[str]:
    """Certificate files (relative to the certs folder) that the service's files or env name."""
    found: set[str] = set()
    texts = [f.content.decode("utf-8", "replace") for f in spec.files]
    if spec.container is not None:
        texts += list(spec.container.env.values())
        texts += list(spec.container.command or ()) + list(spec.container.entrypoint or ())
    for text in texts:
        found.update(m.rstrip(".") for m in _CERT_REF.findall(text))
    return sorted(found)


def container_files(spec: ServiceSpec, certs: CertPaths, *, certs_required: bool,
                    only: Sequence[str] | None = None) -> list[ContainerFile]:
    """The rendered files and the certificates a container of ``spec`` needs.

    ``certs_required``: a referenced certificate that does not exist is an error (TLS on);
    otherwise it is left out (a disabled TLS listener may still name its files).
    ``only``: restrict to these rendered files (relpaths), e.g. the reloadable ones.
    """
    assert spec.container is not None
    uid, gid = file_owner(spec)
    files = [ContainerFile(f.container_path, f.content, f.mode, uid, gid)
             for f in spec.files if f.container_path and (only is None or f.relpath in only)]
    if only is not None:
        return files
    for rel in cert_references(spec):
        host = certs.root / rel
        if not host.is_file():
            if certs_required:
                raise CertError(f"{spec.name} needs {host}, which does not exist",
                                hint="run `ecokit certs generate`")
            continue
        mode = 0o600 if rel.endswith(".key") else 0o644
        files.append(ContainerFile(f"{PathMap.CONTAINER_CERTS}/{rel}", host.read_bytes(), mode, uid, gid))
    return files


def file_owner(spec: ServiceSpec) -> tuple[int, int]:
    """Who owns the service's files in its container: the spec's choice, else the ecokit
    image's user for ecokit's own services, else root."""
    assert spec.container is not None
    if spec.container.file_owner is not None:
        return spec.container.file_owner
    return ECOKIT_IMAGE_USER if spec.role == "ecokit" else (0, 0)


def volume_roots(spec: ServiceSpec) -> list[ContainerFile]:
    """Mount points of ecokit's own services' volumes, owned by the image's user.

    Images of other services ship their data folders with the right owner and a new named
    volume copies that; the ecokit image cannot know every service's volume paths, and a
    mount point it lacks would be root's, unwritable by ecokit's services.
    """
    if spec.container is None or spec.role != "ecokit":
        return []
    uid, gid = file_owner(spec)
    return [ContainerFile(v.container_path, b"", 0o750, uid, gid, directory=True) for v in spec.volumes]


def fingerprint(spec: ServiceSpec, image_id: str, files: Sequence[ContainerFile]) -> str:
    """Changes whenever the container must be recreated: spec, image, certificates."""
    h = hashlib.sha256()
    h.update(spec.fingerprint().encode() + b"\0" + image_id.encode() + b"\0")
    for f in sorted(files, key=lambda f: f.path):
        if f.path.startswith(PathMap.CONTAINER_CERTS + "/"):
            h.update(f.path.encode() + b"\0" + f.content + b"\0")
    return h.hexdigest()[:16]


def container_config(spec: ServiceSpec, names: StackNames, *, bind: str,
                     extra_labels: Mapping[str, str] | None = None) -> ContainerConfig:
    assert spec.container is not None
    c = spec.container
    return ContainerConfig(
        name=names.container(spec.name),
        image=c.image,
        network=names.network,
        hostname=spec.name,
        labels=names.labels(spec.name, **(extra_labels or {})),
        command=c.command,
        entrypoint=c.entrypoint,
        env=dict(c.env),
        user=c.user,
        aliases=tuple(dict.fromkeys((spec.name, *c.aliases))),
        ports=[(p.container, p.host_ip or bind, p.host) for p in spec.ports],
        volumes=[(names.volume(spec.name, v.name), v.container_path) for v in spec.volumes],
    )


def reloadable_files(spec: ServiceSpec) -> list[RenderedFile]:
    return [f for f in spec.files if f.relpath in spec.reloadable and f.container_path]


def project_label(project_dir: Path) -> str:
    return str(project_dir)
