#!/usr/bin/env bash
# Runs the whole ecokit test suite: unit, integration (real mosquitto and influxd),
# conformance, docker (when an engine can run) and load. Installs what it needs first.
# Extra arguments go to pytest, e.g. `bash infra/test.sh -m "not integration"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/install.sh
exec .venv/bin/python -m pytest "$@"
