#!/usr/bin/env bash
# Runs the whole ecokit test suite: unit, integration (real mosquitto and influxd), browser
# (the console page in headless Chromium), conformance, docker (when an engine can run) and
# load. Installs what it needs first.
# Extra arguments go to pytest, e.g. `bash infra/test.sh -m "not integration"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/install.sh
# In CI the docker lane must run (the suite starts a private dockerd): fail, never skip.
if [ "${CI:-}" = "true" ]; then export ECOKIT_REQUIRE_DOCKER="${ECOKIT_REQUIRE_DOCKER:-1}"; fi
exec .venv/bin/python -m pytest "$@"
