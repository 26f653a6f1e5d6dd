#!/usr/bin/env bash
# The figures of benchmarks/RESULTS.md (issue 9): for rpc, handshake, fanout and idle, the
# reference gateway, krabfast on the compiled core, krabfast on the pure-Python core and the
# echo server, each a fresh server per repetition, interleaved; medians of 3 (min-max).
# One command per scenario gives both tables (vs-reference and compiled-vs-pure).
# chat (issue 10): the same without the echo server (it has no chat); the harness starts a
# fake OpenAI-compatible model server and configures every gateway with it.
#
# About 12 minutes on a 2-core machine (most of it the reference's start-up and its slower
# handshakes). Run it on an otherwise idle machine: the load clients share the cores.
#
#   benchmarks/run_all.sh                  # results in benchmarks/results/<UTC time>/
#   OUT=/tmp/r REPEAT=5 benchmarks/run_all.sh
#   QUICK=1 benchmarks/run_all.sh          # seconds: tiny loads, no reference (checks the script)
#
# Each scenario leaves SCENARIO.json (`krabfast bench --json`: per target the core, versions,
# krabfast commit and dirty flag, CPU count, command line; every run's metrics) and
# SCENARIO.txt (the tables, `python -m krabfast.bench.report SCENARIO.json`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-benchmarks/results/$(date -u +%Y%m%dT%H%M%SZ)}
REPEAT=${REPEAT:-3}
mkdir -p "$OUT"

if [ "${QUICK:-0}" = 1 ]; then
    REPEAT=${QUICK_REPEAT:-2}
    TARGETS=(--targets krabfast,echo)
    RPC=(--conns 4 --inflight 2 --duration 1 --warmup 0.2)
    PIPELINED=4
    HANDSHAKE=(-n 100 -c 4)
    FANOUT=(--receivers 100 --broadcasts 2 --pause 0.1)
    IDLE=(--sockets 100 --settle 0.2)
    CHAT_TARGETS=(--targets krabfast)
    CHAT=(--watchers 2 --runners 1 --concurrency 2 --runs 4)
else
    TARGETS=()
    RPC=(--conns 20 --inflight 4 --duration 10)
    HANDSHAKE=(-n 4000 -c 10)
    FANOUT=(--receivers 4000 --broadcasts 5)
    IDLE=(--sockets 2000)
    CHAT_TARGETS=(--targets reference,krabfast)
    CHAT=(--watchers 50 --runners 4 --concurrency 8 --duration 8 --chunks 20 --chunk-delay 0.005)
fi

"$PY" -m krabfast.bench.launch --probe > "$OUT/environment.json"
git rev-parse HEAD > "$OUT/commit.txt" 2>/dev/null || true
git status --porcelain > "$OUT/git-status.txt" 2>/dev/null || true

start=$(date +%s)
run() {  # run NAME SCENARIO ARGS...: NAME.json and NAME.txt
    local name=$1 scenario=$2
    shift 2
    local cmd=(krabfast bench "$scenario" --vs-reference --core both "${TARGETS[@]}" "$@"
               --repeat "$REPEAT")
    echo "== ${cmd[*]}" | tee -a "$OUT/commands.txt"
    "$PY" -m "${cmd[@]}" --json > "$OUT/$name.json"
    "$PY" -m krabfast.bench.report "$OUT/$name.json" | tee "$OUT/$name.txt"
    echo "   ($(( $(date +%s) - start )) s so far)"
}

run rpc rpc "${RPC[@]}"
# The same requests pipelined deeper (16 in flight per socket): reads carry more frames,
# so fewer syscalls per request and the core's own work shows (see RESULTS.md).
run rpc-pipelined rpc "${RPC[@]}" --inflight "${PIPELINED:-16}"
run handshake handshake "${HANDSHAKE[@]}"
run fanout fanout "${FANOUT[@]}"
run idle idle "${IDLE[@]}"
TARGETS=("${CHAT_TARGETS[@]}")  # no echo server: it has no chat
run chat chat "${CHAT[@]}"

echo "done in $(( $(date +%s) - start )) s: $OUT"
