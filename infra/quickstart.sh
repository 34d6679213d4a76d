#!/usr/bin/env bash
# ecokit quick start: installs everything (system packages + .venv), creates a demo project,
# brings the stack up, runs a fleet of vehicles through it and shows their telemetry landing
# in InfluxDB. The stack keeps running afterwards, and so does the fleet (for KEEP_DRIVING, in
# the background) so the console's map stays live: `cd demo && ../.venv/bin/ecokit status`.
#
#   VEHICLES=50 DURATION=30s KEEP_DRIVING=1h RUNTIME=local|docker bash infra/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VEHICLES=${VEHICLES:-50}
DURATION=${DURATION:-30s}
KEEP_DRIVING=${KEEP_DRIVING:-1h}   # 0: no fleet left driving after the measured run
# local: mosquitto + influxd + ecokit's services as processes (works offline).
# docker: EMQX, InfluxDB 2, Grafana and Prometheus containers (pulls pinned images).
RUNTIME=${RUNTIME:-local}
if [ "$RUNTIME" = docker ]; then BROKER=${BROKER:-emqx}; else BROKER=${BROKER:-mosquitto}; fi

bash infra/install.sh
ECOKIT="$ROOT/.venv/bin/ecokit"

if [ ! -f demo/ecokit.yaml ]; then
  "$ECOKIT" init demo --stack demo --devices "$VEHICLES" --broker "$BROKER"
fi
cd demo

"$ECOKIT" doctor || true
"$ECOKIT" up --runtime "$RUNTIME"

echo
echo "== a fleet of $VEHICLES vehicles publishing for $DURATION (Paris, seed 42)"
"$ECOKIT" simulate --vehicles "$VEHICLES" --rate 1s --qos 1 --region paris --seed 42 \
                   --duration "$DURATION" --register

echo
echo "== telemetry that landed in InfluxDB"
"$ECOKIT" query "SELECT count(seq) AS points FROM telemetry WHERE time > now() - 10m"
"$ECOKIT" query -n 10
echo
echo "== vehicle status from the fleet processor"
"$ECOKIT" query -m status -n 5
echo
"$ECOKIT" status

FLEET_PID=.ecokit/quickstart-fleet.pid
if [ -f "$FLEET_PID" ] && kill -0 "$(cat "$FLEET_PID")" 2>/dev/null; then
  kill "$(cat "$FLEET_PID")"   # the fleet a previous quick start left driving: one fleet at a time
fi
if [ "$KEEP_DRIVING" != 0 ]; then
  nohup "$ECOKIT" simulate --vehicles "$VEHICLES" --rate 1s --qos 1 --region paris --seed 42 \
        --duration "$KEEP_DRIVING" > .ecokit/quickstart-fleet.log 2>&1 &
  echo $! > "$FLEET_PID"
  echo "== the fleet keeps driving in the background for $KEEP_DRIVING (pid $(cat "$FLEET_PID"), log demo/.ecokit/quickstart-fleet.log)"
  echo "   stop it: kill \$(cat demo/$FLEET_PID)"
fi
cat <<'MSG'

The stack is still up. Try, from demo/:
  ../.venv/bin/ecokit command send vehicle-0001 ping            # a command and its ack
  ../.venv/bin/ecokit shadow get vehicle-0001                   # the vehicle's shadow
  ../.venv/bin/ecokit replay --since 10m --prefix replay/ --speed max
  ../.venv/bin/ecokit open                                      # the fleet console in a browser
  ../.venv/bin/ecokit down                                      # stop it (data stays; --purge deletes it)
MSG
echo
echo "== the fleet console: a live map, the HTTP API (/docs) and the WebSocket stream; open this URL"
"$ECOKIT" open --print
