#!/usr/bin/env bash
# Progressive-delivery benchmark: what a running rollout costs the data plane. Requests/s and CPU
# time per request through cutover for (a) a plain live version and (b) a change held at weight 50
# with analysis on (sticky by header, both versions real backends), and the daemon's memory while
# the analysis counts traffic. A script, not a test: it prints figures.
#
#   bench/progressive.sh      (from the repository root, after `make`)
#
# Backend: one nginx (one worker) with two server blocks, v1 and v2, each answering 200 with a
# 100-byte body, as in bench/proxy.sh. cutover: `workers: 1`, one service, sticky by X-User-Id.
# Load: wrk -t1 -c64 for BENCH_SECONDS (default 5) with a Lua script that sends a random
# X-User-Id on every request (in both cases, so the requests are the same); BENCH_ROUNDS (default
# 2) interleaved rounds a, b, a, b (abort and re-deploy in between); medians.
# CPU per request = the daemon's utime+stime delta (/proc/PID/stat) over the requests wrk
# completed. Memory: the daemon's VmRSS 1 s into each (b) run and at its end (5 s): the analysis
# state is fixed-size (counters and histograms per version), so it must not grow with requests.
# Everything runs on loopback, in a mktemp dir, and is stopped by pid on exit. Bounded: < 2 min.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-2}
CONNS=${BENCH_CONNS:-64}
BIN=build/cutover
WORK=$(mktemp -d /tmp/cutover-bench-prog.XXXXXX)
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
[ -x "$BIN" ] || make -s >/dev/null 2>&1 || true
[ -x "$BIN" ] || die "$BIN not built (run make)"

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
port_up() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
start() { local log=$1; shift; "$@" >>"$WORK/$log" 2>&1 & PIDS+=($!); }
cli() { timeout 30 "$BIN" "$@" -c "$WORK/cutover.yml"; }

B1=$(free_port); B2=$(free_port); CP=$(free_port)
[ "$(printf '%s\n' "$B1" "$B2" "$CP" | sort -u | wc -l)" = 3 ] || die "port clash, run again"
mkdir -p "$WORK/be"

BODY1=$(printf 'backend=1 %089d\n' 0)   # 100 bytes with the newline
BODY2=$(printf 'backend=2 %089d\n' 0)
cat >"$WORK/be/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/be/nginx.pid; error_log $WORK/be/err.log warn;
events { worker_connections 10000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
  server { listen 127.0.0.1:$B1 backlog=4096;
    location / { default_type text/plain; return 200 "$BODY1\n"; } }
  server { listen 127.0.0.1:$B2 backlog=4096;
    location / { default_type text/plain; return 200 "$BODY2\n"; } } }
EOF
# The gates are set so that a healthy v2 passes them (nginx answers both alike), and
# on_failure: pause holds the split if one ever trips: the split is what is measured.
cat >"$WORK/cutover.yml" <<EOF
state_dir: $WORK/var
workers: 1
services:
  web:
    listen: 127.0.0.1:$CP
    health_check: {path: /, interval: 1s, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 3}
    deploy_timeout: 10s
    drain_timeout: 1s
    targets: [127.0.0.1:$B1]
    sticky: {header: X-User-Id}
plans:
  half:
    steps: [{weight: 50}, {pause: {}}]
    analysis: {interval: 1s, min_requests: 100, max_error_rate: 0.05, max_p99_latency_ratio: 10}
    on_failure: pause
EOF
cat >"$WORK/users.lua" <<'EOF'
-- A random user on every request, so that the sticky split is exercised.
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/", {["X-User-Id"] = "user-" .. math.random(1, 1000000)})
end
EOF

start be.log nginx -e "$WORK/be/err.log" -p "$WORK/be" -c "$WORK/be/nginx.conf"
port_up "$B1" && port_up "$B2" || die "nginx did not start: $(cat "$WORK/be.log" "$WORK/be/err.log" 2>/dev/null)"
start cutover.log "$BIN" serve -c "$WORK/cutover.yml"; CPID=${PIDS[-1]}
port_up "$CP" || die "cutover did not listen: $(cat "$WORK/cutover.log")"
for _ in $(seq 1 50); do [ "$(curl -s -m 1 "http://127.0.0.1:$CP/")" = "$BODY1" ] && break; sleep 0.1; done
[ "$(curl -s -m 1 "http://127.0.0.1:$CP/")" = "$BODY1" ] || die "cutover does not answer v1's body"

ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12+$13}'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

# Puts the service in state a (plain: v1 live, no change) or b (change held at weight 50).
state() {
    if [ "$1" = b ]; then
        cli deploy web v2 --target "127.0.0.1:$B2" --plan half >"$WORK/deploy.out" 2>&1 ||
            die "deploy failed: $(cat "$WORK/deploy.out")"
        # Both versions must really answer, about half each, by user.
        local n2
        n2=$(for i in $(seq 1 200); do curl -s -m 1 -H "X-User-Id: probe-$i" "http://127.0.0.1:$CP/"; done | grep -c 'backend=2' || true)
        [ "$n2" -ge 60 ] && [ "$n2" -le 140 ] || die "split not near 50 %: $n2 of 200 probe users on v2"
        echo "$n2" >>"$WORK/split"
    else
        if cli status web | grep -q 'change: *[0-9]'; then
            cli abort web >"$WORK/abort.out" 2>&1 || die "abort failed: $(cat "$WORK/abort.out")"
        fi
        for _ in $(seq 1 50); do cli status web | grep -q 'change: *none' && break; sleep 0.1; done
        [ "$(curl -s -m 1 -H 'X-User-Id: x' "http://127.0.0.1:$CP/")" = "$BODY1" ] || die "not back on v1"
    fi
}

# run CASE ROUND -> appends "CASE rps cpu_us_per_req errors requests rss1_kib rss5_kib"
run() {
    local name=$1 out="$WORK/wrk-$1-$2.txt" t0 t1 wpid r1 r5
    t0=$(ticks "$CPID")
    timeout $((SECS + 15)) wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$WORK/users.lua" "http://127.0.0.1:$CP/" >"$out" 2>&1 &
    wpid=$!
    sleep 1; r1=$(rss_kib "$CPID")
    sleep $(python3 -c "print(max($SECS - 1.2, 0.1))"); r5=$(rss_kib "$CPID")
    wait "$wpid" || true
    t1=$(ticks "$CPID")
    python3 - "$out" "$name" "$t0" "$t1" "$HZ" "$r1" "$r5" >>"$WORK/results" <<'PY'
import re, sys
path, name, t0, t1, hz, r1, r5 = sys.argv[1:8]
t = open(path).read()
n = re.search(r"(\d+) requests in", t); n = int(n.group(1)) if n else 0
rps = re.search(r"Requests/sec:\s+([\d.]+)", t); rps = float(rps.group(1)) if rps else 0.0
se = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t)) if "Socket errors" in t else 0
m = re.search(r"Non-2xx or 3xx responses: (\d+)", t); bad = se + (int(m.group(1)) if m else 0)
cpu = (int(t1) - int(t0)) * 1e6 / int(hz) / max(n, 1)
print(name, rps, cpu, bad, n, r1, r5)
if bad:
    why = re.findall(r"^\s*(Socket errors:.*|Non-2xx or 3xx responses:.*)$", t, re.M)
    print(f"bench: case {name}: {bad} errors: {'; '.join(why)}", file=sys.stderr)
PY
}

echo "bench: $(nproc) cores, wrk -t1 -c$CONNS -d${SECS}s x $ROUNDS rounds, cases a (plain) and b (weight 50 + analysis)" >&2
timeout 10 wrk -t1 -c"$CONNS" -d1s -s "$WORK/users.lua" "http://127.0.0.1:$CP/" >/dev/null 2>&1 || true
: >"$WORK/results"; : >"$WORK/split"
for r in $(seq 1 "$ROUNDS"); do
    state a; run a "$r"
    state b; run b "$r"
    cli status web >"$WORK/status-$r.txt" 2>&1 || true
    grep -q 'split: *50%' "$WORK/status-$r.txt" || die "the change is not at weight 50 after the run: $(cat "$WORK/status-$r.txt")"
done

echo "last status of the held change:"; sed 's/^/    /' "$WORK/status-$ROUNDS.txt"
python3 - "$WORK/results" "$WORK/split" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
split = [int(x) for x in open(sys.argv[2]).read().split()]
med = {}
print(f"{'case':<28} {'req/s':>9} {'CPU us/req':>11} {'errors':>7} {'requests':>9}")
for n, label in (("a", "a: plain live version"), ("b", "b: weight 50 + analysis")):
    rs = [r for r in rows if r[0] == n]
    med[n] = {"rps": st.median(float(r[1]) for r in rs), "cpu": st.median(float(r[2]) for r in rs)}
    err = sum(int(r[3]) for r in rs); req = sum(int(r[4]) for r in rs)
    print(f"{label:<28} {med[n]['rps']:>9.0f} {med[n]['cpu']:>11.1f} {err:>7} {req:>9}"
          f"   rounds: {', '.join(f'{float(r[1]):.0f}' for r in rs)} req/s")
print(f"ratio b/a: req/s {med['b']['rps']/med['a']['rps']:.3f}x (target >= 0.95), "
      f"CPU/req {med['b']['cpu']/med['a']['cpu']:.3f}x")
print(f"probe users on v2 in case b: {', '.join(f'{x}/200' for x in split)}")
for r in (r for r in rows if r[0] == "b"):
    print(f"daemon VmRSS in a (b) run: {int(r[5])} KiB after 1 s, {int(r[6])} KiB at the end "
          f"({int(r[6]) - int(r[5]):+d} KiB while {int(r[4])} requests went through)")
PY
