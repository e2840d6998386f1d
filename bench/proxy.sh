#!/usr/bin/env bash
# Proxy benchmark: cutover vs HAProxy vs nginx, configured equivalently (keep-alive to the
# upstream, connections reused), and direct to the backend, all in one run. A script, not a
# test: it prints figures (docs/benchmarks.md records them).
#
#   bench/proxy.sh            full run (from the repository root, after `make`; or `make bench`)
#   bench/proxy.sh --quick    the short run: 1 worker, 64 connections, 100-byte response
#
# Full run, for each proxy:
#   workers 1 and 2 (cutover `workers: N`, HAProxy `nbthread N`, nginx `worker_processes N`)
#   x 64 and 256 connections x a 100-byte (/) and a 64 KiB (/64k) response:
#   requests/s, p50 and p99 (wrk -t1 --latency), CPU seconds per 100k requests (utime+stime
#   delta of the proxy's process tree from /proc over the requests wrk completed), errors;
#   BENCH_ROUNDS interleaved rounds, medians. Plus idle-connection memory: BENCH_IDLE (10000)
#   keep-alive connections opened to each freshly started 1-worker proxy (one request on each,
#   then held open), reported as the RSS delta of the process tree per connection, in bytes.
# Then, full run only (issue 13):
#   during a canary: 1 worker, 64 connections, 100 B, two backends (v1, v2). cutover holds a
#   change at weight 50 reached by two promotes (plan: weight 10, pause, 30, pause, 50, pause);
#   HAProxy `balance roundrobin` over two servers of weight 50, nginx an upstream of both:
#   req/s, p50, p99, CPU per request, and upstream connections opened per request (the
#   backend's accepted connections, nginx stub_status, over the requests wrk completed);
#   poll coalescing: cutover with io_coalesce_us 100 (the default) and 0 side by side, at
#   BENCH_NAP_CONNS (1 8 64) connections: req/s, p50, p99, CPU, naps taken (/metrics).
# Backend: nginx, one worker, keep-alive without limit. Loopback only; everything runs from a
# mktemp dir and is stopped by pid on exit. Bounded: about 5 minutes full, 1 minute --quick.
# Knobs (environment): BENCH_SECONDS (3 full / 5 quick) per point, BENCH_ROUNDS (2),
# BENCH_WORKERS ("1 2"), BENCH_CONNS ("64 256"), BENCH_SIZES ("100 65536"), BENCH_IDLE (10000,
# 0 = skip), BENCH_RAW=1 also prints every run's figures, BENCH_CUTOVER (build/cutover) the cutover
# binary to measure (e.g. an older build, for a before/after in the same conditions),
# BENCH_CANARY (1 full / 0 quick: the canary rows), BENCH_NAP_CONNS ("1 8 64" full / "" quick:
# the coalescing rows; "" skips them), BENCH_TLS (1: the TLS rows; 0 skips them).
# TLS rows (issue 17): the three proxies terminate TLS with the same certificate (EC P-256, made
#   with the openssl CLI), 1 worker: keep-alive requests/s, p99 and CPU per request at 100 B
#   over https (wrk -c64), and full handshakes per second (BENCH_HS_CLIENTS parallel
#   `openssl s_time -new`, no resumption; each connection a handshake and nothing else) with
#   the proxy's CPU per handshake.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
case "${1:-}" in
    --quick) QUICK=1 ;;
    "") ;;
    *) echo "usage: bench/proxy.sh [--quick]" >&2; exit 2 ;;
esac
if [ $QUICK = 1 ]; then
    SECS=${BENCH_SECONDS:-5}; WORKERS=${BENCH_WORKERS:-1}; CONNS=${BENCH_CONNS:-64}
    SIZES=${BENCH_SIZES:-100}; IDLE=${BENCH_IDLE:-0}
    CANARY=${BENCH_CANARY:-0}; NAP_CONNS=${BENCH_NAP_CONNS-}
else
    SECS=${BENCH_SECONDS:-3}; WORKERS=${BENCH_WORKERS:-"1 2"}; CONNS=${BENCH_CONNS:-"64 256"}
    SIZES=${BENCH_SIZES:-"100 65536"}; IDLE=${BENCH_IDLE:-10000}
    CANARY=${BENCH_CANARY:-1}; NAP_CONNS=${BENCH_NAP_CONNS-"1 8 64"}
fi
ROUNDS=${BENCH_ROUNDS:-2}
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
for c in nginx haproxy wrk python3 curl; do
    command -v "$c" >/dev/null || die "$c not installed (scripts/deps.sh installs it)"
done
HAVE_CUTOVER=1
CUTOVER_BIN=${BENCH_CUTOVER:-build/cutover}
if [ ! -x "$CUTOVER_BIN" ] && [ -z "${BENCH_CUTOVER:-}" ]; then
    make -s >/dev/null 2>&1 || true
fi
[ -x "$CUTOVER_BIN" ] || { echo "bench: $CUTOVER_BIN not built: measuring the others only" >&2; HAVE_CUTOVER=0; }
# A private copy: a rebuild in the tree during the run does not change what is measured.
[ $HAVE_CUTOVER = 1 ] && cp "$CUTOVER_BIN" "$WORK/cutover"

# File descriptors for the idle-connection test (10,000 client connections per proxy): up to
# 65536, or the hard limit when that is lower. The proxies and the idle client inherit it.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
[ "$IDLE" -gt 0 ] && [ "$NOFILE" -lt $((IDLE + 1000)) ] && die "ulimit -n is $NOFILE: too low for BENCH_IDLE=$IDLE"

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
port_up() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
start() { local log=$1; shift; "$@" >>"$WORK/$log" 2>&1 & PIDS+=($!); }
stop() { # pid: TERM, wait up to 2 s, KILL; then forget it (never signal a reaped pid again)
    local p=$1 q keep=()
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    for q in "${PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
    PIDS=("${keep[@]}")
}

BE=$(free_port); HP=$(free_port); NP=$(free_port); CP=$(free_port)
BE2=$(free_port); SP=$(free_port); CN0=$(free_port)   # v2 backend, stub_status, cutover nap 0
[ "$(printf '%s\n' "$BE" "$HP" "$NP" "$CP" "$BE2" "$SP" "$CN0" | sort -u | wc -l)" = 7 ] ||
    die "port clash, run again"
mkdir -p "$WORK/be" "$WORK/np"

BODY=$(printf 'backend=1 %089d\n' 0)   # 100 bytes with the newline
BODY2=$(printf 'backend=2 %089d\n' 0)  # v2 of the canary rows: same size
head -c 65536 /dev/zero | tr '\0' 'x' >"$WORK/be/64k"
chmod 755 "$WORK" "$WORK/be"; chmod 644 "$WORK/be/64k"   # nginx workers run as nobody
cat >"$WORK/be/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/be/nginx.pid; error_log $WORK/be/err.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections 10000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 75s; sendfile on;
  server { listen 127.0.0.1:$BE backlog=4096;
    location / { default_type text/plain; return 200 "$BODY\n"; }
    location = /64k { default_type application/octet-stream; alias $WORK/be/64k; } }
  server { listen 127.0.0.1:$BE2 backlog=4096;
    location / { default_type text/plain; return 200 "$BODY2\n"; } }
  server { listen 127.0.0.1:$SP; location / { stub_status; } } }
EOF

path_of() { [ "$1" = 100 ] && echo / || echo /64k; }
for s in $SIZES; do [ "$s" = 100 ] || [ "$s" = 65536 ] || die "BENCH_SIZES: 100 and/or 65536"; done

# Proxy configurations for N workers. Equivalent: keep-alive on both sides, upstream
# connections reused (up to 512 idle per worker: cutover's pool size), no access log, bodies
# streamed or buffered in memory (never to disk), idle client connections kept >= 60 s.
# `configure N canary`: two backends, v1 and v2, half of the requests each (cutover: a plan
# whose weights are reached by promotes, see canary_phase).
configure() {
    local n=$1 ha_be="  server s1 127.0.0.1:$BE" ng_be="server 127.0.0.1:$BE;" var=var plans=""
    if [ "${2:-}" = canary ]; then
        ha_be="  balance roundrobin
  server s1 127.0.0.1:$BE weight 50
  server s2 127.0.0.1:$BE2 weight 50"
        ng_be="server 127.0.0.1:$BE; server 127.0.0.1:$BE2;"
        var=var-canary
        plans="plans:
  canary:
    steps: [{weight: 10}, {pause: {}}, {weight: 30}, {pause: {}}, {weight: 50}, {pause: {}}]"
    fi
    cat >"$WORK/np/nginx.conf" <<EOF
worker_processes $n; daemon off; pid $WORK/np/nginx.pid; error_log $WORK/np/err.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $((IDLE + 2000)); }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
  upstream be { $ng_be keepalive 512; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NP backlog=4096;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering on; proxy_buffers 8 8k; proxy_max_temp_file_size 0; } } }
EOF
    # maxconn above the idle test's count; "no strict-limits": HAProxy asks for 2 x maxconn fds,
    # more than the hard limit may allow (it warns and runs), while the test needs about maxconn.
    cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread $n
  maxconn $((IDLE + 2000))
  no strict-limits
defaults
  mode http
  maxconn $((IDLE + 2000))
  timeout connect 2s
  timeout client 75s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$HP backlog 4096
  default_backend be
backend be
$ha_be
EOF
    cat >"$WORK/cutover.yml" <<EOF
state_dir: $WORK/$var
workers: $n
services:
  web:
    listen: 127.0.0.1:$CP
    health_check: {path: /, interval: 5s, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 3}
    targets: [127.0.0.1:$BE]
$plans
EOF
}

declare -A PORT=([direct]=$BE [haproxy]=$HP [nginx]=$NP [cutover]=$CP) PID=()
PROXIES="haproxy nginx"; [ $HAVE_CUTOVER = 1 ] && PROXIES="$PROXIES cutover"

start_proxies() {
    start haproxy.log haproxy -db -f "$WORK/haproxy.cfg"; PID[haproxy]=${PIDS[-1]}
    port_up "$HP" || die "haproxy did not start: $(cat "$WORK/haproxy.log")"
    start nginx.log nginx -e "$WORK/np/err.log" -p "$WORK/np" -c "$WORK/np/nginx.conf"; PID[nginx]=${PIDS[-1]}
    port_up "$NP" || die "nginx proxy did not start: $(cat "$WORK/nginx.log" "$WORK/np/err.log" 2>/dev/null)"
    if [ $HAVE_CUTOVER = 1 ]; then
        start cutover.log "$WORK/cutover" serve -c "$WORK/cutover.yml"; PID[cutover]=${PIDS[-1]}
        port_up "$CP" || die "cutover did not listen: $(cat "$WORK/cutover.log")"
        SOCK[cutover]=$(sed -n 's/^state_dir: //p' "$WORK/cutover.yml")/cutover.sock
    fi
    local name
    for name in $PROXIES; do   # each answers the backend's body (v1's, or v2's in a canary)
        for _ in $(seq 1 100); do answers "$name" && break; sleep 0.2; done
        answers "$name" || die "$name does not answer the backend's body: $(tail -5 "$WORK/$name.log" 2>/dev/null)"
    done
    # Tolerated: "FD limit too low for maxconn" when the hard limit is below 2 x maxconn.
    grep -i alert "$WORK/haproxy.log" | grep -qv "FD limit" && die "haproxy: $(cat "$WORK/haproxy.log")"
    sleep 0.5   # every nginx worker forked
    for name in direct $PROXIES; do TREE[$name]=$(tree "${PID[$name]}" | sed 's|$|/stat|' | tr '\n' ' '); done
    return 0
}
answers() { local b; b=$(curl -s -m 2 "http://127.0.0.1:${PORT[$1]}/"); [ "$b" = "$BODY" ] || [ "$b" = "$BODY2" ]; }
stop_proxies() { local name; for name in $PROXIES; do stop "${PID[$name]}"; done; }

tree() { local c; echo "$1"; for c in $(pgrep -P "$1"); do tree "$c"; done; }
declare -A TREE=()   # NAME -> the pids of its process tree (taken once started: fixed after)
# utime+stime in clock ticks of NAME's process tree; fields counted after "(comm) ".
ticks() { (cd /proc && cat ${TREE[$1]} 2>/dev/null) | sed 's/.*) //' | awk '{s += $12 + $13} END {print s + 0}'; }
HZ=$(getconf CLK_TCK)

# Connections the backend nginx has accepted so far (stub_status; each call adds its own one).
accepts() { curl -s -m 2 "http://127.0.0.1:$SP/" | awk 'NR == 3 {print $1}'; }
# Naps taken so far by a cutover daemon (cutover_worker_naps_total), 0 for anything else.
declare -A SOCK=()   # NAME -> the admin socket of a cutover daemon
naps() {
    [ -n "${SOCK[$1]:-}" ] || { echo 0; return; }
    curl -s -m 2 --unix-socket "${SOCK[$1]}" http://localhost/metrics |
        awk '$1 == "cutover_worker_naps_total" {print $2; n = 1} END {if (!n) print 0}'
}

# run NAME WORKERS CONNS SIZE ROUND [RUNS] -> appends "NAME WORKERS CONNS SIZE ROUND t0 t1
# wrk-output accepts0 accepts1 naps0 naps1" to RUNS ($WORK/runs); the report parses it.
run() {
    local name=$1 out="$WORK/wrk-$1-$2-$3-$4-$5.txt" t0 t1 a0 a1 n0 n1
    a0=$(accepts); n0=$(naps "$name"); t0=$(ticks "$name")
    timeout $((SECS + 15)) wrk -t1 -c"$3" -d"${SECS}s" --latency "${SCHEME:-http}://127.0.0.1:${PORT[$name]}$(path_of "$4")" >"$out" 2>&1 || true
    t1=$(ticks "$name"); a1=$(accepts); n1=$(naps "$name")
    echo "$name $2 $3 $4 $5 $t0 $t1 $out $a0 $a1 $n0 $n1" >>"${6:-$WORK/runs}"
}

# idle NAME: BENCH_IDLE keep-alive connections, one request each, held; RSS delta of the tree.
idle() {
    timeout 120 python3 - "$1" "${PID[$1]}" "${PORT[$1]}" "$IDLE" >>"$WORK/idle" 2>>"$WORK/idle.err" <<'PY' || echo "$1 fail" >>"$WORK/idle"
import os, resource, select, socket, sys, time
name, root, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
def tree(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(); out.append(p); todo += kids.get(p, [])
    return out
def rss_kib():
    s = 0
    for p in tree(root):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"): s += int(line.split()[1])
        except OSError:
            pass
    return s
REQ = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
def request(s):
    s.sendall(REQ)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d: raise ConnectionError("closed")
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"): raise ConnectionError(head[:40])
    cl = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
    want = int(cl[0].split(b":")[1]) if cl else 100
    while len(body) < want:
        d = s.recv(4096)
        if not d: raise ConnectionError("closed in body")
        body += d
warm = socket.create_connection(("127.0.0.1", port)); request(warm); warm.close()
time.sleep(1.0)
before = rss_kib()
socks, t0 = [], time.monotonic()
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    request(s)
    socks.append(s)
opened = time.monotonic() - t0
time.sleep(2.0)
after = rss_kib()
# still open? a socket closed by the proxy is readable (EOF)
p = select.poll()
for s in socks: p.register(s, select.POLLIN)
closed = len(p.poll(0))
for s in socks: s.close()
print(name, n, before, after, (after - before) * 1024 / n, closed, f"{opened:.1f}")
PY
}

echo "bench: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), workers [$WORKERS], conns [$CONNS]," \
     "sizes [$SIZES], wrk -t1 -d${SECS}s x $ROUNDS rounds, idle $IDLE, ulimit -n $NOFILE: direct $PROXIES" \
     "(cutover: $CUTOVER_BIN)" >&2
start be.log nginx -e "$WORK/be/err.log" -p "$WORK/be" -c "$WORK/be/nginx.conf"; PID[direct]=${PIDS[-1]}
port_up "$BE" || die "nginx backend did not start: $(cat "$WORK/be.log" "$WORK/be/err.log" 2>/dev/null)"
[ "$(curl -s "http://127.0.0.1:$BE/64k" | wc -c)" = 65536 ] || die "backend does not serve /64k"
: >"$WORK/runs"; : >"$WORK/idle"
for w in $WORKERS; do
    configure "$w"
    start_proxies
    if [ "$IDLE" -gt 0 ] && [ "$w" = "$(echo $WORKERS | cut -d' ' -f1)" ]; then
        for name in $PROXIES; do
            echo "bench: $IDLE idle connections to $name ($w worker)" >&2
            idle "$name"
        done
    fi
    targets=$PROXIES; [ "$w" = "$(echo $WORKERS | cut -d' ' -f1)" ] && targets="direct $PROXIES"
    maxc=$(echo $CONNS | tr ' ' '\n' | sort -n | tail -1)
    for name in $targets; do   # warm-up: connections, pools, caches
        timeout 10 wrk -t1 -c"$maxc" -d1s "http://127.0.0.1:${PORT[$name]}/" >/dev/null 2>&1 || true
    done
    for r in $(seq 1 "$ROUNDS"); do
        for c in $CONNS; do for s in $SIZES; do
            echo "bench: workers $w, $c conns, $s B, round $r" >&2
            for name in $targets; do run "$name" "$w" "$c" "$s" "$r"; done
        done; done
    done
    stop_proxies
done

cli() { timeout 30 "$WORK/cutover" "$@" -c "$WORK/cutover.yml"; }
# share NAME: how many of 200 requests, each on a new connection, v2 answered.
share() { for _ in $(seq 1 200); do curl -s -m 2 "http://127.0.0.1:${PORT[$1]}/"; done | grep -c '^backend=2' || true; }

# During a canary: the three proxies split 50/50 between v1 and v2; cutover got there by a
# deploy and two promotes (each one a route table publish, which must not cost the canary its
# pooled upstream connections).
: >"$WORK/runs-canary"
if [ "$CANARY" = 1 ] && [ $HAVE_CUTOVER = 1 ]; then
    configure 1 canary
    start_proxies
    cli deploy web v2 --target "127.0.0.1:$BE2" --plan canary >"$WORK/deploy.out" 2>&1 ||
        die "canary deploy failed: $(cat "$WORK/deploy.out")"
    for _ in 1 2; do
        cli promote web >>"$WORK/deploy.out" 2>&1 || die "promote failed: $(cat "$WORK/deploy.out")"
    done
    for _ in $(seq 1 50); do cli status web | grep -q 'split: *50%' && break; sleep 0.1; done
    cli status web | grep -q 'split: *50%' || die "cutover not at weight 50: $(cli status web)"
    for name in $PROXIES; do   # each really splits: about 100 of 200 on v2
        n2=$(share "$name")
        echo "$name $n2" >>"$WORK/split"
        [ "$n2" -ge 60 ] && [ "$n2" -le 140 ] || die "$name: $n2 of 200 requests on v2, not about half"
    done
    for name in $PROXIES; do timeout 10 wrk -t1 -c64 -d1s "http://127.0.0.1:${PORT[$name]}/" >/dev/null 2>&1 || true; done
    for r in $(seq 1 "$ROUNDS"); do
        echo "bench: during a canary, 1 worker, 64 conns, 100 B, round $r" >&2
        order=$PROXIES; [ $((r % 2)) = 0 ] && order=$(echo $PROXIES | tr ' ' '\n' | tac | tr '\n' ' ')
        for name in $order; do run "$name" 1 64 100 "canary$r" "$WORK/runs-canary"; done
    done
    cli status web | grep -q 'split: *50%' || die "the canary ended during the run: $(cli status web)"
    stop_proxies
fi

# Poll coalescing: two cutover daemons, io_coalesce_us 100 (the default) and 0, measured
# interleaved at each connection count (1 worker, 100 B). Here and in the canary rows the
# order flips every round: in the first run the daemon measured first was the slower one in
# all four pairs at 1 and 8 connections, where neither took a nap and both ran the same code.
: >"$WORK/runs-nap"
if [ -n "$NAP_CONNS" ] && [ $HAVE_CUTOVER = 1 ]; then
    configure 1
    sed -e "s|^state_dir: .*|state_dir: $WORK/var-nap0|" -e "s|^workers: 1|&\nio_coalesce_us: 0|" \
        -e "s|127.0.0.1:$CP|127.0.0.1:$CN0|" "$WORK/cutover.yml" >"$WORK/cutover-nap0.yml"
    grep -q '^io_coalesce_us: 0' "$WORK/cutover-nap0.yml" || die "cutover-nap0.yml: no io_coalesce_us"
    PORT[cutover-nap0]=$CN0
    start cutover.log "$WORK/cutover" serve -c "$WORK/cutover.yml"; PID[cutover]=${PIDS[-1]}
    start cutover-nap0.log "$WORK/cutover" serve -c "$WORK/cutover-nap0.yml"; PID[cutover-nap0]=${PIDS[-1]}
    SOCK[cutover]=$WORK/var/cutover.sock; SOCK[cutover-nap0]=$WORK/var-nap0/cutover.sock
    for name in cutover cutover-nap0; do
        port_up "${PORT[$name]}" || die "$name did not listen: $(cat "$WORK/$name.log")"
        for _ in $(seq 1 100); do [ "$(curl -s -m 1 "http://127.0.0.1:${PORT[$name]}/")" = "$BODY" ] && break; sleep 0.2; done
        TREE[$name]=$(tree "${PID[$name]}" | sed 's|$|/stat|' | tr '\n' ' ')
        timeout 10 wrk -t1 -c64 -d1s "http://127.0.0.1:${PORT[$name]}/" >/dev/null 2>&1 || true
    done
    for r in $(seq 1 "$ROUNDS"); do
        for c in $NAP_CONNS; do
            echo "bench: poll coalescing on/off, $c conns, round $r" >&2
            order="cutover cutover-nap0"; [ $((r % 2)) = 0 ] && order="cutover-nap0 cutover"
            for name in $order; do run "$name" 1 "$c" 100 "nap$r" "$WORK/runs-nap"; done
        done
    done
    stop "${PID[cutover]}"; stop "${PID[cutover-nap0]}"
fi

# TLS termination: the same certificate on the three proxies, 1 worker, 100 B over https with
# keep-alive (wrk), then full handshakes (openssl s_time -new: a new session every time).
: >"$WORK/runs-tls"; : >"$WORK/hs"
TLS=${BENCH_TLS:-1}; HS_CLIENTS=${BENCH_HS_CLIENTS:-2}
if [ "$TLS" = 1 ]; then
    mkdir -p "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench.test \
        -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 -keyout "$WORK/tls/key.pem" \
        -out "$WORK/tls/cert.pem" >/dev/null 2>&1 || die "openssl could not make the certificate"
    chmod 600 "$WORK/tls/key.pem"
    cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" >"$WORK/tls/haproxy.pem"; chmod 600 "$WORK/tls/haproxy.pem"
    configure 1
    # The same listeners, TLS 1.2 and 1.3, ALPN http/1.1, the default ciphers of each.
    sed -i "s|^  bind 127.0.0.1:$HP backlog 4096|  bind 127.0.0.1:$HP ssl crt $WORK/tls/haproxy.pem alpn http/1.1 ssl-min-ver TLSv1.2 backlog 4096|" "$WORK/haproxy.cfg"
    sed -i "s|listen 127.0.0.1:$NP backlog=4096;|listen 127.0.0.1:$NP ssl backlog=4096; ssl_certificate $WORK/tls/cert.pem; ssl_certificate_key $WORK/tls/key.pem; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m;|" "$WORK/np/nginx.conf"
    sed -i "s|^    listen: 127.0.0.1:$CP|&\n    tls: {cert: $WORK/tls/cert.pem, key: $WORK/tls/key.pem}|; s|^state_dir: .*|state_dir: $WORK/var-tls|" "$WORK/cutover.yml"
    grep -q "ssl crt" "$WORK/haproxy.cfg" && grep -q "ssl_certificate " "$WORK/np/nginx.conf" &&
        grep -q "tls:" "$WORK/cutover.yml" || die "TLS configuration not applied"
    SCHEME=https
    answers() { local b; b=$(curl -sk -m 2 "https://127.0.0.1:${PORT[$1]}/"); [ "$b" = "$BODY" ]; }
    start_proxies
    for name in $PROXIES; do timeout 10 wrk -t1 -c64 -d1s "https://127.0.0.1:${PORT[$name]}/" >/dev/null 2>&1 || true; done
    for r in $(seq 1 "$ROUNDS"); do
        echo "bench: TLS keep-alive, 1 worker, 64 conns, 100 B, round $r" >&2
        order=$PROXIES; [ $((r % 2)) = 0 ] && order=$(echo $PROXIES | tr ' ' '\n' | tac | tr '\n' ' ')
        for name in $order; do run "$name" 1 64 100 "tls$r" "$WORK/runs-tls"; done
    done
    for r in $(seq 1 "$ROUNDS"); do
        echo "bench: TLS full handshakes, $HS_CLIENTS clients, round $r" >&2
        order=$PROXIES; [ $((r % 2)) = 0 ] && order=$(echo $PROXIES | tr ' ' '\n' | tac | tr '\n' ' ')
        for name in $order; do
            t0=$(ticks "$name"); hs_pids=()
            for k in $(seq 1 "$HS_CLIENTS"); do
                timeout $((SECS + 15)) openssl s_time -connect "127.0.0.1:${PORT[$name]}" -new -time "$SECS" \
                    >"$WORK/hs-$name-$r-$k.txt" 2>&1 & hs_pids+=($!)
            done
            for p in "${hs_pids[@]}"; do wait "$p" || true; done
            t1=$(ticks "$name")
            n=$(cat "$WORK"/hs-"$name"-"$r"-*.txt | awk '/connections in [0-9.]+s;/ {s += $1} END {print s + 0}')
            echo "$name $r $t0 $t1 $n $SECS" >>"$WORK/hs"
        done
    done
    stop_proxies
fi

python3 - "$WORK/runs" "$WORK/idle" "$HZ" "$WORK/runs-canary" "$WORK/runs-nap" "$WORK/runs-tls" "$WORK/hs" <<'PY'
import math, os, re, statistics as st, sys
hz = int(sys.argv[3])
def parse(line):   # "name w c s round t0 t1 wrk-output a0 a1 n0 n1" -> one run's figures
    name, w, c, s, r, t0, t1, path, a0, a1, n0, n1 = line.split()
    t = open(path).read()
    def ms(v, u): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[u]
    def pct(p):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m)\b" % p, t, re.M)
        return ms(*m.groups()) if m else float("nan")
    n = re.search(r"(\d+) requests in", t); n = int(n.group(1)) if n else 0
    rps = re.search(r"Requests/sec:\s+([\d.]+)", t); rps = float(rps.group(1)) if rps else 0.0
    se = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t)) if "Socket errors" in t else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", t); bad = se + (int(m.group(1)) if m else 0)
    if n == 0: bad += 1
    cpu = (int(t1) - int(t0)) * 1e6 / hz / max(n, 1)
    # The backend's accepts: minus the stub_status request that read a1 (a0's is counted before).
    conns = (int(a1 or 0) - int(a0 or 0) - 1) / max(n, 1)
    return [name, w, c, s, r, rps, pct(50), pct(99), cpu, bad, n, conns, int(n1 or 0) - int(n0 or 0)]
def load(path):
    rows = [parse(l) for l in open(path) if l.strip()]
    if os.environ.get("BENCH_RAW") == "1":   # every run: name workers conns size round rps p50 p99 CPU us/req errors requests conns/req naps
        for r in rows: print("run", *[f"{x:.3f}" if isinstance(x, float) else x for x in r])
    return rows
def medians(rows):   # (name, conns) -> medians of the rounds, summed errors, requests, naps
    out = {}
    for r in rows: out.setdefault((r[0], int(r[2])), []).append(r)
    return {k: dict({f: st.median(float(r[i]) for r in rs) for f, i in
                     (("rps", 5), ("p50", 6), ("p99", 7), ("cpu", 8), ("conns", 11))},
                    err=sum(r[9] for r in rs), req=sum(r[10] for r in rs), naps=sum(r[12] for r in rs))
            for k, rs in out.items()}
rows = load(sys.argv[1])
med, keys = {}, []
for r in rows:
    k = (r[0], int(r[1]), int(r[2]), int(r[3]))
    if k not in med: med[k] = []
    med[k].append(r)
    kk = k[1:]
    if kk not in keys: keys.append(kk)
M = {}
for k, rs in med.items():
    M[k] = {f: st.median(float(r[i]) for r in rs) for f, i in (("rps", 5), ("p50", 6), ("p99", 7), ("cpu", 8))}
    M[k]["err"] = sum(int(r[9]) for r in rs); M[k]["req"] = sum(int(r[10]) for r in rs)
size = lambda s: "100 B" if s == 100 else "64 KiB"
print(f"{'w':>1} {'conns':>5} {'resp':>6}  {'target':<8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
      f"{'CPU s/100k':>10} {'errors':>6}")
for w, c, s in keys:
    for n in ("direct", "haproxy", "nginx", "cutover"):
        m = M.get((n, w, c, s))
        if not m: continue
        cpu = "-" if n == "direct" else f"{m['cpu'] / 10:.2f}"
        print(f"{w:>1} {c:>5} {size(s):>6}  {n:<8} {m['rps']:>8.0f} {m['p50']:>7.3f} {m['p99']:>7.3f} "
              f"{cpu:>10} {m['err']:>6}")
print("(medians of the rounds; CPU: the proxy's process tree, direct: none; errors = socket errors"
      " + non-2xx, all rounds)")
if any(k[0] == "cutover" for k in M):
    print()
    print("ratios cutover/other (req/s: higher is better; p50, p99, CPU: lower is better);")
    print("target vs HAProxy: req/s >= 1.0x, p99 <= 1.0x, CPU <= 1.0x")
    print(f"{'w':>1} {'conns':>5} {'resp':>6}  {'vs':<8} {'req/s':>6} {'p50':>6} {'p99':>6} {'CPU':>6}  target")
    for w, c, s in keys:
        cm = M.get(("cutover", w, c, s))
        for o in ("haproxy", "nginx"):
            om = M.get((o, w, c, s))
            if not cm or not om: continue
            q = lambda f: cm[f] / om[f] if om[f] else math.nan
            verdict = ""
            if o == "haproxy":
                miss = [f for f, ok in (("req/s", q("rps") >= 1.0), ("p99", q("p99") <= 1.0),
                                        ("CPU", q("cpu") <= 1.0)) if not ok]
                verdict = "holds" if not miss else "misses " + ",".join(miss)
            print(f"{w:>1} {c:>5} {size(s):>6}  {o:<8} {q('rps'):>6.2f} {q('p50'):>6.2f} {q('p99'):>6.2f} "
                  f"{q('cpu'):>6.2f}  {verdict}")
idle = [l.split() for l in open(sys.argv[2]) if l.strip()]
if idle:
    print()
    print(f"{'idle':<8} {'conns':>6} {'RSS before KiB':>14} {'after KiB':>10} {'bytes/conn':>10} "
          f"{'closed':>6} {'open s':>6}")
    for r in idle:
        if r[1] == "fail":
            print(f"{r[0]:<8} failed (see the run's idle.err)"); continue
        print(f"{r[0]:<8} {int(r[1]):>6} {int(r[2]):>14} {int(r[3]):>10} {float(r[4]):>10.0f} "
              f"{int(r[5]):>6} {r[6]:>6}")
    print("(RSS of the proxy's process tree, fresh 1-worker proxy, before/after opening the connections"
          " and 2 s later; closed = connections the proxy had closed by then, must be 0)")
canary = medians(load(sys.argv[4]))
if canary:
    print()
    print("during a canary: 1 worker, 64 conns, 100 B, v1 and v2 at 50 % each (cutover: weight 50")
    print("after a deploy and two promotes; HAProxy: roundrobin, 2 servers of weight 50; nginx: 2 servers)")
    print(f"{'target':<8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU s/100k':>10} {'upstream conns/req':>18} "
          f"{'errors':>6}")
    for n in ("haproxy", "nginx", "cutover"):
        m = canary.get((n, 64))
        if m:
            print(f"{n:<8} {m['rps']:>8.0f} {m['p50']:>7.3f} {m['p99']:>7.3f} {m['cpu'] / 10:>10.2f} "
                  f"{m['conns']:>18.4f} {m['err']:>6}")
    cm, hm = canary.get(("cutover", 64)), canary.get(("haproxy", 64))
    if cm and hm:
        ok = cm["rps"] >= hm["rps"] and cm["cpu"] <= hm["cpu"] and cm["conns"] < 0.01
        print(f"cutover/haproxy: req/s {cm['rps'] / hm['rps']:.2f}, p99 {cm['p99'] / hm['p99']:.2f}, "
              f"CPU {cm['cpu'] / hm['cpu']:.2f}; cutover upstream conns/req {cm['conns']:.4f}; target "
              f"(req/s >= 1.0x, CPU <= 1.0x, conns/req < 0.01) {'holds' if ok else 'misses'}")
nap = medians(load(sys.argv[5]))
if nap:
    print()
    print("poll coalescing: cutover, 1 worker, 100 B, io_coalesce_us 100 (on, the default) against 0 (off)")
    print(f"{'conns':>5} {'nap':>4} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU s/100k':>10} {'naps':>8} "
          f"{'errors':>6}  p99 on/off")
    for c in sorted({k[1] for k in nap}):
        on, off = nap.get(("cutover", c)), nap.get(("cutover-nap0", c))
        for label, m in (("100", on), ("0", off)):
            if not m: continue
            ratio = f"  {on['p99'] / off['p99']:.2f}" if label == "0" and on and off and off["p99"] else ""
            print(f"{c:>5} {label:>4} {m['rps']:>8.0f} {m['p50']:>7.3f} {m['p99']:>7.3f} {m['cpu'] / 10:>10.2f} "
                  f"{m['naps']:>8} {m['err']:>6}{ratio}")
    print("(medians of the rounds; naps: cutover_worker_naps_total over all rounds)")
tls = medians(load(sys.argv[6]))
hs = {}
for line in open(sys.argv[7]):
    if line.strip():
        name, r, t0, t1, n, secs = line.split()
        hs.setdefault(name, []).append((int(n) / float(secs), (int(t1) - int(t0)) * 1e6 / hz / max(int(n), 1), int(n)))
if tls or hs:
    print()
    print("TLS termination, same certificate (EC P-256), 1 worker: keep-alive over https (64 conns, 100 B)")
    print("and full handshakes (openssl s_time -new, no resumption)")
    print(f"{'target':<8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU s/100k':>10} {'errors':>6} "
          f"{'handshakes/s':>12} {'CPU ms/100 hs':>13}")
    for n in ("haproxy", "nginx", "cutover"):
        m, h = tls.get((n, 64)), hs.get(n)
        if not m and not h: continue
        ka = (f"{m['rps']:>8.0f} {m['p50']:>7.3f} {m['p99']:>7.3f} {m['cpu'] / 10:>10.2f} {m['err']:>6}"
              if m else f"{'-':>8} {'-':>7} {'-':>7} {'-':>10} {'-':>6}")
        hh = (f"{st.median(x[0] for x in h):>12.0f} {st.median(x[1] for x in h) / 10:>13.2f}"
              if h else f"{'-':>12} {'-':>13}")
        print(f"{n:<8} {ka} {hh}")
    cm, hm = tls.get(("cutover", 64)), tls.get(("haproxy", 64))
    ch, hh = hs.get("cutover"), hs.get("haproxy")
    if cm and hm and ch and hh:
        rq = cm["cpu"] / hm["cpu"]
        rh = st.median(x[1] for x in ch) / st.median(x[1] for x in hh)
        print(f"cutover/haproxy: CPU per request {rq:.2f}, CPU per handshake {rh:.2f}; target (both <= 1.0x) "
              f"{'holds' if rq <= 1.0 and rh <= 1.0 else 'misses'}")
    print("(medians of the rounds; CPU: the proxy's process tree; CPU ms/100 hs = CPU ms per 100 handshakes)")
PY
if [ -s "$WORK/idle.err" ]; then echo "bench: idle client errors:" >&2; tail -5 "$WORK/idle.err" >&2; fi
