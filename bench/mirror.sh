#!/usr/bin/env bash
# Shadow-traffic benchmark (issue 18): what a mirror to a slow new version costs the clients.
# Client latency (wrk --latency p50 / p99) through cutover for (a) the live version alone and
# (b) a `mirror:` step copying 100 % of requests to a new version that answers 500 ms later.
# The claim: p99 in (b) within 1.1x of (a), with 0 client errors. A script, not a test.
#
#   bench/mirror.sh      (from the repository root, after `make`)
#
# Live version: nginx (one worker) answering 200 with a 100-byte body. New version:
# tests/e2e/backend.py --delay-ms 500 (a thread per connection, every answer 500 ms late).
# cutover: `workers: 1`. Load: wrk -t1 -c$BENCH_CONNS (default 32) -d$BENCH_SECONDS (default 5)
# on GET /, BENCH_ROUNDS (default 2) interleaved rounds a, b, a, b (abort and re-deploy between);
# medians, and cutover's CPU time per request (utime+stime of the daemon over the requests wrk
# completed). The mirror's max_inflight (64) bounds the copies: the rest are dropped and counted,
# which the record of each (b) change shows. Loopback only, a mktemp dir, every process stopped
# by pid on exit. Bounded: < 1 min with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-2}
CONNS=${BENCH_CONNS:-32}
BIN=build/cutover
WORK=$(mktemp -d /tmp/cutover-bench-mirror.XXXXXX)
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "bench: $*" >&2; exit 1; }
for c in nginx wrk curl python3; do
    command -v "$c" >/dev/null || die "$c not installed (scripts/deps.sh installs it)"
done
[ -x "$BIN" ] || die "$BIN not built (run make)"

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
port_up() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
start() { local log=$1; shift; "$@" >>"$WORK/$log" 2>&1 & PIDS+=($!); }
cli() { timeout 30 "$BIN" "$@" -c "$WORK/cutover.yml"; }

B1=$(free_port); B2=$(free_port); CP=$(free_port)
[ "$(printf '%s\n' "$B1" "$B2" "$CP" | sort -u | wc -l)" = 3 ] || die "port clash, run again"
mkdir -p "$WORK/be"
BODY1=$(printf 'backend=1 %089d\n' 0)
cat >"$WORK/be/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/be/nginx.pid; error_log $WORK/be/err.log warn;
events { worker_connections 10000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
  server { listen 127.0.0.1:$B1 backlog=4096;
    location / { default_type text/plain; return 200 "$BODY1\n"; } } }
EOF
cat >"$WORK/cutover.yml" <<EOF
state_dir: $WORK/var
workers: 1
services:
  web:
    listen: 127.0.0.1:$CP
    health_check: {path: /healthz, interval: 1s, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 3}
    deploy_timeout: 10s
    drain_timeout: 1s
    targets: [127.0.0.1:$B1]
plans:
  shadow:
    steps:
      - mirror: {percent: 100, duration: 10m, max_inflight: 64, min_pairs: 1, max_mismatch_rate: 1}
EOF

start be1.log nginx -e "$WORK/be/err.log" -p "$WORK/be" -c "$WORK/be/nginx.conf"
start be2.log python3 tests/e2e/backend.py "$B2" v2 --delay-ms 500
port_up "$B1" && port_up "$B2" || die "backends did not start"
start cutover.log "$BIN" serve -c "$WORK/cutover.yml"; CPID=${PIDS[-1]}
port_up "$CP" || die "cutover did not listen: $(cat "$WORK/cutover.log")"
for _ in $(seq 1 50); do [ "$(curl -s -m 1 "http://127.0.0.1:$CP/")" = "$BODY1" ] && break; sleep 0.1; done

state() {
    if [ "$1" = b ]; then
        cli deploy web v2 --target "127.0.0.1:$B2" --plan shadow >"$WORK/deploy.out" 2>&1 ||
            die "deploy failed: $(cat "$WORK/deploy.out")"
        for _ in $(seq 1 100); do cli status web | grep -q 'mirror' && break; sleep 0.1; done
    else
        if cli status web | grep -q 'change: *[0-9]'; then
            cli abort web >"$WORK/abort.out" 2>&1 || die "abort failed: $(cat "$WORK/abort.out")"
        fi
        for _ in $(seq 1 50); do cli status web | grep -q 'change: *none' && break; sleep 0.1; done
    fi
}

ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12+$13}'; }
HZ=$(getconf CLK_TCK)

run() {
    local out="$WORK/wrk-$1-$2.txt" t0 t1
    t0=$(ticks "$CPID")
    timeout $((SECS + 15)) wrk -t1 -c"$CONNS" -d"${SECS}s" --latency --timeout 5s \
        "http://127.0.0.1:$CP/" >"$out" 2>&1 || true
    t1=$(ticks "$CPID")
    python3 - "$out" "$1" "$t0" "$t1" "$HZ" >>"$WORK/results" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)" % label, t, re.M)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
n = re.search(r"(\d+) requests in", t)
se = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t)) if "Socket errors" in t else 0
nx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
reqs = int(n.group(1)) if n else 0
cpu_us = (int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[5]) * 1e6 / max(reqs, 1)
print(sys.argv[2], ms("50"), ms("99"), se + (int(nx.group(1)) if nx else 0), reqs, f"{cpu_us:.2f}")
PY
}

for r in $(seq 1 "$ROUNDS"); do
    state a; run a "$r"
    state b; run b "$r"
    id=$(cli status web --json | python3 -c 'import json,sys; d=json.load(sys.stdin); d=d.get("services",[d])[0] if isinstance(d,dict) and "services" in d else d; print((d.get("change") or {}).get("id",""))')
    [ -n "$id" ] && cli report "$id" --format json | python3 -c '
import json, sys
d = json.dumps(json.load(sys.stdin))
import re
m = re.search(r"\"mirror\": \{[^{]*?\"pairs\": (\d+)", d)
dr = re.search(r"\"dropped\": (\d+)", d)
print("  (b) mirrored pairs so far:", m.group(1) if m else "?", "dropped:", dr.group(1) if dr else "?")' || true
done
state a
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def med(case, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == case)
for r in rows:
    print(f"{r[0]}: p50 {float(r[1]):.3f} ms  p99 {float(r[2]):.3f} ms  errors {r[3]}  "
          f"requests {r[4]}  cutover CPU {r[5]} us/request")
a99, b99 = med("a", 2), med("b", 2)
errs = sum(int(r[3]) for r in rows)
print(f"median p99: live alone {a99:.3f} ms, with a mirror to a 500 ms slower version {b99:.3f} ms "
      f"-> {b99 / a99:.2f}x (claim: <= 1.10x); client errors {errs}; cutover CPU per request "
      f"{med('a', 5):.2f} -> {med('b', 5):.2f} us")
PY
