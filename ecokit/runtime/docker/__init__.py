"""The docker runtime: a thin layer over the Docker SDK (``engine``), service objects above
it (``service``), the runtime that runs a plan (``runtime``) and its Compose twin (``compose``)."""

from ecokit.runtime.docker.engine import ContainerConfig, Engine, ImageRef, PullProgress
from ecokit.runtime.docker.runtime import DockerRuntime, DockerSettings
from ecokit.runtime.docker.service import StackNames

__all__ = ["ContainerConfig", "DockerRuntime", "DockerSettings", "Engine", "ImageRef", "PullProgress", "StackNames"]
