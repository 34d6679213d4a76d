#!/usr/bin/env bash
# Installs everything ecokit needs on Debian/Ubuntu, as root: system packages and a
# virtualenv at .venv with ecokit and its development tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(python3 python3-venv python3-pip mosquitto mosquitto-clients influxdb prometheus
                 ca-certificates curl git)
# The docker runtime's test lane: a private dockerd and images built from debootstrap.
# (Debian bookworm has no `docker compose` v2 plugin; its docker-compose 1.29 rejects the
# inline `content` configs `ecokit compose` writes, so the lane checks the file against the
# Compose Specification's schema instead, and runs `docker compose config` where v2 exists.)
SYSTEM_PACKAGES+=(docker.io debootstrap)
# The console's browser tests and page benchmark: headless Chromium driven by Selenium.
SYSTEM_PACKAGES+=(chromium chromium-driver)
# The websocket test lane builds a Mosquitto with websockets (infra/ws-broker.sh).
SYSTEM_PACKAGES+=(build-essential cmake libssl-dev libcap-dev libcjson-dev)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The distribution starts its own mosquitto/influxd on the default ports under systemd;
# ecokit runs its own per stack, so keep the distribution's services off when systemd runs.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now mosquitto influxdb prometheus >/dev/null 2>&1 || true
fi

# ws:// and wss:// tests need a Mosquitto with websockets, which Debian's is not (built once, cached).
bash infra/ws-broker.sh

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
echo "ecokit installed: $(.venv/bin/ecokit --help >/dev/null && echo .venv/bin/ecokit)"
