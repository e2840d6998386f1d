#!/bin/sh
# Installs the Debian packages that cutover's build, tests, benchmarks and demo need.
# Idempotent and quiet when everything is already there; the Makefile calls it before building.
set -eu

PKGS="gcc make pkg-config clang clang-format libclang-rt-14-dev \
libuv1-dev libfyaml-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev libcmocka-dev \
python3 python3-pytest python3-pytest-xdist curl openssl wrk haproxy nginx-light sqlite3 procps slowhttptest systemd prometheus"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# nginx-light and haproxy are only run by the benchmark, prometheus only gives the tests promtool:
# keep their packaged services from starting.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
