"""`ecokit init`: a new project folder with ecokit.yaml and its registry files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ecokit.config.loader import CONFIG_FILENAME, load_config
from ecokit.config.model import StackConfig
from ecokit.errors import ConfigError
from ecokit.render import render_template


@dataclass(frozen=True)
class InitResult:
    written: list[Path]
    skipped: list[Path]


def device_ids(count: int, prefix: str = "vehicle-") -> list[str]:
    width = max(4, len(str(count)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, count + 1)]


def init_project(folder: Path, *, stack: str | None = None, broker: str = "mosquitto",
                 devices: int = 10, port_offset: int = 0, force: bool = False) -> InitResult:
    """Write ecokit.yaml, config/devices.yaml and config/users.yaml into ``folder``.

    Existing files are left alone unless ``force``; the result says which were skipped.
    """
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    name = stack or _stack_name(folder)
    defaults = StackConfig()
    ports = {k: v + port_offset for k, v in defaults.broker.ports.model_dump().items()}
    ports.update(influxdb=defaults.influxdb.port + port_offset,
                 influxdb_rpc=defaults.influxdb.rpc_port + port_offset,
                 grafana=defaults.grafana.port + port_offset,
                 prometheus=defaults.prometheus.port + port_offset)
    ports.update({k: v + port_offset for k, v in defaults.service_ports.model_dump().items()})
    ports.update(console=defaults.console.port + port_offset)
    files = {
        folder / CONFIG_FILENAME: render_template("init/ecokit.yaml.j2", stack=name, broker=broker,
                                                  ports=ports),
        folder / "config" / "devices.yaml": render_template("init/devices.yaml.j2",
                                                            devices=device_ids(devices)),
        folder / "config" / "users.yaml": render_template("init/users.yaml.j2"),
    }
    written, skipped = [], []
    for path, content in files.items():
        if path.exists() and not force:
            skipped.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    gitignore = folder / ".gitignore"
    wanted = [".ecokit/", "certs/"]
    have = gitignore.read_text().splitlines() if gitignore.exists() else []
    missing = [line for line in wanted if line not in have]
    if missing:
        with gitignore.open("a") as fh:
            if have and have[-1].strip():
                fh.write("\n")
            fh.write("# ecokit: state, secrets and private keys stay out of git\n")
            fh.write("".join(f"{line}\n" for line in missing))
        written.append(gitignore)
    # What we wrote must load; anything else is a bug worth failing loudly on.
    load_config(folder / CONFIG_FILENAME)
    return InitResult(written, skipped)


def _stack_name(folder: Path) -> str:
    import re

    name = re.sub(r"[^a-z0-9-]+", "-", folder.name.lower()).strip("-")[:31] or "ecokit"
    if not name[0].isalnum():
        name = "ecokit"
    try:
        StackConfig(stack=name)
    except ValueError:
        raise ConfigError(f"cannot derive a stack name from {folder.name!r}", hint="pass --stack NAME") from None
    return name
