"""Helpers for tests of MQTT systems, used by ecokit's own suites and open to yours.

``stack`` (free ports, throwaway projects, :func:`running_stack` that always tears down),
``mqtt`` (:class:`SyncClient`: paho with deadlines), ``waiting`` (:func:`wait_for`),
``simulation`` (:func:`~ecokit.testing.simulation.simulating`: ``ecokit simulate`` beside a test),
``docker_lane`` (a private dockerd and the images the docker tests need; imported on its own,
it is heavy).

    from ecokit.testing import SyncClient, running_stack, write_project
"""

from ecokit.testing.mqtt import Received, SyncClient
from ecokit.testing.stack import free_port, project_config, running_stack, write_project, ws_broker_binary
from ecokit.testing.waiting import wait_for

__all__ = ["Received", "SyncClient", "free_port", "project_config", "running_stack", "wait_for", "write_project",
           "ws_broker_binary"]
