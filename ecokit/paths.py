"""Where a stack keeps its files (everything under ``<project>/.ecokit/<stack>/``) and where
its services run (``Target``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# Where a plan's services run: local processes, or containers of a Docker engine.
Target = Literal["local", "docker"]

STATE_DIRNAME = ".ecokit"


@dataclass(frozen=True)
class StackPaths:
    project_dir: Path
    stack: str

    @property
    def root(self) -> Path:
        return self.project_dir / STATE_DIRNAME / self.stack

    @property
    def config_dir(self) -> Path:
        """Rendered configuration, one folder per service."""
        return self.root / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "runtime.lock"

    @property
    def active_profile_file(self) -> Path:
        """The profile of the running stack, so later commands need no --profile."""
        return self.root / "profile"

    def service_config(self, service: str) -> Path:
        return self.config_dir / service

    def service_data(self, service: str) -> Path:
        return self.data_dir / service

    def log(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"
