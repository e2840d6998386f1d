#!/usr/bin/env bash
# Proxy benchmark: requests/s, p50/p99 latency and CPU time per request through cutover, HAProxy
# and nginx, configured equivalently (one worker/thread each, keep-alive to the upstream), and
# direct to the backend, all in the same run. A script, not a test: it prints figures.
#
#   bench/proxy.sh            (from the repository root, after `make`; or `make bench`)
#
# Backend: nginx (one worker) answering 200 with a 100-byte body. Load: wrk -t1 -c64 for
# BENCH_SECONDS (default 5) per run, BENCH_ROUNDS (default 2) interleaved rounds, medians.
# CPU per request = the proxy's utime+stime delta (/proc/PID/stat, the process and its children)
# divided by the requests wrk completed: the figure that stays stable on a noisy shared machine.
# Everything runs on loopback, in a mktemp dir, and is stopped by pid on exit. Bounded: < 2 min.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-2}
CONNS=${BENCH_CONNS:-64}
BIN=build/cutover
WORK=$(mktemp -d /tmp/cutover-bench.XXXXXX)
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
for c in nginx haproxy wrk python3; do
    command -v "$c" >/dev/null || die "$c not installed (scripts/deps.sh installs it)"
done
HAVE_CUTOVER=1
if [ ! -x "$BIN" ]; then
    make -s >/dev/null 2>&1 || true
    [ -x "$BIN" ] || { echo "bench: $BIN not built: measuring the others only" >&2; HAVE_CUTOVER=0; }
fi

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
port_up() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
start() { local log=$1; shift; "$@" >>"$WORK/$log" 2>&1 & PIDS+=($!); }

BE=$(free_port); HP=$(free_port); NP=$(free_port); CP=$(free_port)
[ "$(printf '%s\n' "$BE" "$HP" "$NP" "$CP" | sort -u | wc -l)" = 4 ] || die "port clash, run again"
mkdir -p "$WORK/be" "$WORK/np"

BODY=$(printf 'backend=1 %089d\n' 0)   # 100 bytes with the newline
cat >"$WORK/be/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/be/nginx.pid; error_log $WORK/be/err.log warn;
events { worker_connections 10000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
  server { listen 127.0.0.1:$BE backlog=4096;
    location / { default_type text/plain; return 200 "$BODY\n"; } } }
EOF
cat >"$WORK/np/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/np/nginx.pid; error_log $WORK/np/err.log warn;
events { worker_connections 10000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
  upstream be { server 127.0.0.1:$BE; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NP backlog=4096;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering on; } } }
EOF
cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$HP backlog 4096
  default_backend be
backend be
  server s1 127.0.0.1:$BE
EOF
cat >"$WORK/cutover.yml" <<EOF
state_dir: $WORK/var
workers: 1
services:
  web:
    listen: 127.0.0.1:$CP
    health_check: {path: /, interval: 5s, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 3}
    targets: [127.0.0.1:$BE]
EOF

start be.log nginx -e "$WORK/be/err.log" -p "$WORK/be" -c "$WORK/be/nginx.conf"; BPID=${PIDS[-1]}
port_up "$BE" || die "nginx backend did not start: $(cat "$WORK/be.log" "$WORK/be/err.log" 2>/dev/null)"
start hap.log haproxy -db -f "$WORK/haproxy.cfg"; HPID=${PIDS[-1]}
port_up "$HP" || die "haproxy did not start: $(cat "$WORK/hap.log")"
start np.log nginx -e "$WORK/np/err.log" -p "$WORK/np" -c "$WORK/np/nginx.conf"; NPID=${PIDS[-1]}
port_up "$NP" || die "nginx proxy did not start: $(cat "$WORK/np.log" "$WORK/np/err.log" 2>/dev/null)"
NAMES="direct haproxy nginx"
declare -A PORT=([direct]=$BE [haproxy]=$HP [nginx]=$NP) PID=([direct]=$BPID [haproxy]=$HPID [nginx]=$NPID)
if [ $HAVE_CUTOVER = 1 ]; then
    start cutover.log "$BIN" serve -c "$WORK/cutover.yml"; CPID=${PIDS[-1]}
    port_up "$CP" || die "cutover did not listen: $(cat "$WORK/cutover.log")"
    for _ in $(seq 1 50); do [ "$(curl -s -m 1 "http://127.0.0.1:$CP/")" = "$BODY" ] && break; sleep 0.1; done
    [ "$(curl -s -m 1 "http://127.0.0.1:$CP/")" = "$BODY" ] || die "cutover does not answer the backend's body"
    NAMES="$NAMES cutover"; PORT[cutover]=$CP; PID[cutover]=$CPID
fi

tree() { local c; echo "$1"; for c in $(pgrep -P "$1"); do tree "$c"; done; }
# utime+stime in clock ticks of a process and its descendants; fields counted after "(comm) ".
ticks() { local s=0 p v; for p in $(tree "$1"); do
            v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}'); s=$((s + ${v:-0})); done; echo $s; }
HZ=$(getconf CLK_TCK)

# run NAME ROUND -> appends "NAME rps p50_ms p99_ms cpu_us_per_req errors requests" to results
run() {
    local name=$1 out="$WORK/wrk-$1-$2.txt" t0 t1
    t0=$(ticks "${PID[$name]}")
    timeout $((SECS + 15)) wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:${PORT[$name]}/" >"$out" 2>&1 || true
    t1=$(ticks "${PID[$name]}")
    python3 - "$out" "$name" "$t0" "$t1" "$HZ" >>"$WORK/results" <<'PY'
import re, sys
path, name, t0, t1, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
t = open(path).read()
def ms(v, u): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[u]
def pct(p):
    m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m)\b" % p, t, re.M)
    return ms(*m.groups()) if m else float("nan")
n = re.search(r"(\d+) requests in", t); n = int(n.group(1)) if n else 0
rps = re.search(r"Requests/sec:\s+([\d.]+)", t); rps = float(rps.group(1)) if rps else 0.0
se = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t)) if "Socket errors" in t else 0
m = re.search(r"Non-2xx or 3xx responses: (\d+)", t); bad = se + (int(m.group(1)) if m else 0)
cpu = (t1 - t0) * 1e6 / hz / max(n, 1)
print(name, rps, pct(50), pct(99), cpu, bad, n)
PY
}

echo "bench: $(nproc) cores, wrk -t1 -c$CONNS -d${SECS}s x $ROUNDS rounds: $NAMES" >&2
for name in $NAMES; do   # warm-up: connections, pools, caches
    timeout 10 wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:${PORT[$name]}/" >/dev/null 2>&1 || true
done
: >"$WORK/results"
for r in $(seq 1 "$ROUNDS"); do
    for name in $NAMES; do run "$name" "$r"; done
done

python3 - "$WORK/results" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
names = list(dict.fromkeys(r[0] for r in rows))
med = {}
for n in names:
    rs = [r for r in rows if r[0] == n]
    med[n] = {k: st.median(float(r[i]) for r in rs) for k, i in
              (("rps", 1), ("p50", 2), ("p99", 3), ("cpu", 4))}
    med[n]["err"] = sum(int(r[5]) for r in rs)
    med[n]["req"] = sum(int(r[6]) for r in rs)
print(f"{'target':<9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11} {'errors':>7} {'requests':>9}")
for n in names:
    m = med[n]
    cpu = "-" if n == "direct" else f"{m['cpu']:.1f}"
    print(f"{n:<9} {m['rps']:>9.0f} {m['p50']:>8.3f} {m['p99']:>8.3f} {cpu:>11} {m['err']:>7} {m['req']:>9}")
print("(direct: CPU is the backend's own; medians of the rounds; errors = socket errors + non-2xx)")
if "cutover" in med:
    c = med["cutover"]
    for o in ("haproxy", "nginx"):
        m = med[o]
        print(f"cutover/{o}: req/s {c['rps']/m['rps']:.2f}x, p50 {c['p50']/m['p50']:.2f}x, "
              f"p99 {c['p99']/m['p99']:.2f}x, CPU/req {c['cpu']/m['cpu']:.2f}x")
else:
    m, n = med["haproxy"], med["nginx"]
    print(f"haproxy/nginx: req/s {m['rps']/n['rps']:.2f}x, CPU/req {m['cpu']/n['cpu']:.2f}x (cutover not built)")
PY
