#!/usr/bin/env bash
# Gate simulation: the false-rollback rate of a version exactly at its limit over a 10-window
# plan, and the windows needed to catch one 2x and 5x over it at 200 requests a window, for the
# error-rate limits 0.01 and 0.05 and the p99 (slow-share) gate. Builds bench/gates_sim.c
# against the daemon's own src/rollout/analysis.c and src/core/hist.c (no daemon, no network)
# and prints Markdown tables. Deterministic for a seed; one core, < 60 s at 10,000 plans a row.
#
#   bench/gates.sh [plans per row (default 10000)] [seed (default 20261203)]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
${CC:-cc} -std=c17 -O2 -D_GNU_SOURCE -Isrc -Wall -Wextra -Werror -o build/gates_sim \
    bench/gates_sim.c src/rollout/analysis.c src/core/hist.c -lm
exec build/gates_sim "${1:-10000}" "${2:-20261203}"
