#!/usr/bin/env bash
# A Mosquitto with websockets for the test lane (ws:// and wss:// tests).
#
# Debian's mosquitto 2.0.11 has no websocket listener: Debian's libwebsockets 4.1.6 is built
# without LWS_WITH_EXTERNAL_POLL, which Mosquitto's listener needs (it cannot open the port).
# So this builds the same Mosquitto from Debian's own source package (with Debian's patches)
# against Debian's libwebsockets source configured with external poll, linked statically, and
# installs one binary. Nothing else on the machine changes: the sources are fetched with
# `apt-get source` through a private source list, built in a temporary folder.
#
#   bash infra/ws-broker.sh            # -> $ECOKIT_WS_BROKER_DIR/mosquitto (default ~/.cache/ecokit-tests/mosquitto-ws)
#
# The tests find it there (ecokit.testing.ws_broker_binary) and put its folder first on PATH for
# the stacks that need websockets; `ecokit` users get the same with any websocket-enabled mosquitto
# on PATH, or the docker runtime (eclipse-mosquitto and EMQX images serve ws/wss).
set -euo pipefail

DEST="${ECOKIT_WS_BROKER_DIR:-$HOME/.cache/ecokit-tests/mosquitto-ws}"
MOSQUITTO_VERSION="2.0.11"
version_of() { "$1" -h 2>/dev/null | head -1 || true; }  # mosquitto -h exits non-zero
if [ -x "$DEST/mosquitto" ] && [[ "$(version_of "$DEST/mosquitto")" == *"mosquitto version $MOSQUITTO_VERSION"* ]]; then
  echo "ws broker: $DEST/mosquitto (already built)"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ! dpkg -s build-essential cmake libssl-dev libcap-dev libcjson-dev >/dev/null 2>&1; then
  apt-get install -y -q build-essential cmake libssl-dev libcap-dev libcjson-dev >/dev/null
fi

WORK="$(mktemp -d /tmp/ecokit-ws-broker.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial"
echo "deb-src http://deb.debian.org/debian bookworm main" > "$WORK/sources.list"
APT=(apt-get -q -o "Dir::Etc::sourcelist=$WORK/sources.list" -o "Dir::Etc::sourceparts=-"
     -o "Dir::State::Lists=$WORK/lists")
cd "$WORK"
"${APT[@]}" update >/dev/null 2>&1
"${APT[@]}" source --download-only "mosquitto=$MOSQUITTO_VERSION-1.2+deb12u2" libwebsockets=4.1.6-3 >/dev/null 2>&1 \
  || "${APT[@]}" source --download-only mosquitto libwebsockets >/dev/null 2>&1

# libwebsockets with external poll (what Mosquitto's listener needs), static, no test apps.
tar xzf libwebsockets_*.orig.tar.gz
(cd libwebsockets-*/ && mkdir build && cd build \
  && cmake .. -DLWS_WITH_EXTERNAL_POLL=ON -DLWS_WITH_SHARED=OFF -DLWS_WITH_STATIC=ON -DLWS_WITHOUT_TESTAPPS=ON \
       -DLWS_WITH_MINIMAL_EXAMPLES=OFF -DLWS_WITH_SSL=ON -DDISABLE_WERROR=ON -DCMAKE_BUILD_TYPE=Release \
       -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_INSTALL_PREFIX="$WORK/lws" >/dev/null 2>&1 \
  && make -j"$(nproc)" >/dev/null 2>&1 && make install >/dev/null 2>&1)

# Mosquitto with Debian's patches, websockets on, linked against that libwebsockets.
tar xzf "mosquitto_${MOSQUITTO_VERSION}.orig.tar.gz"
tar xJf mosquitto_*.debian.tar.xz -C "mosquitto-$MOSQUITTO_VERSION"
cd "mosquitto-$MOSQUITTO_VERSION"
if [ -f debian/patches/series ]; then
  grep -v '^\s*#' debian/patches/series | while read -r patch_name _; do
    [ -n "$patch_name" ] && patch -p1 -s -N < "debian/patches/$patch_name" >/dev/null || true
  done
fi
sed -i 's/-lwebsockets$/-lwebsockets -lcap/' config.mk  # the static libwebsockets uses libcap
make -j"$(nproc)" -C src WITH_WEBSOCKETS=yes WITH_DOCS=no CFLAGS="-I$WORK/lws/include -O2" \
  LDFLAGS="-L$WORK/lws/lib" >/dev/null 2>&1
mkdir -p "$DEST"
install -m 0755 src/mosquitto "$DEST/mosquitto"
echo "ws broker: $DEST/mosquitto ($(version_of "$DEST/mosquitto"))"
