#!/usr/bin/env bash
# The standard benchmark suite (`make bench`): every case runs against Huddle and against
# the bare broadcaster `huddle-baseline`, each on a fresh server pinned to CPU 0 with the
# load generator on CPU 1. Writes bench-results/<time>/results.json (one JSON object per
# run) and table.md (Huddle / baseline ratios). A `variant` case runs Huddle with one
# setting changed, compared with the same baseline run. Loopback only.
#
#   bash scripts/bench.sh            # the whole suite (~9 min after the build)
#   BENCH_QUICK=1 bash scripts/bench.sh   # tiny sizes: checks the machinery in ~1 min
#   bash scripts/bench.sh fanout     # only the cases whose name contains "fanout"
#   BENCH_PROFILE=profiling bash scripts/bench.sh   # the same code with line tables, for perf
#   BENCH_HUDDLE_BIN=/path/to/other/huddle bash scripts/bench.sh fanout   # A/B another build
#   BENCH_ROUNDS=3 bash scripts/bench.sh fanout-45k   # 3 rounds: medians, per-round ratios
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

only="${1:-}"
rounds="${BENCH_ROUNDS:-1}"
quick="${BENCH_QUICK:-0}"
server_cpu="${BENCH_SERVER_CPU:-0}"
loader_cpu="${BENCH_LOADER_CPU:-1}"
profile="${BENCH_PROFILE:-release}"
bin="target/$profile"
huddle_bin="${BENCH_HUDDLE_BIN:-$bin/huddle}"

echo "[bench] building release binaries (server, load generator, baseline)"
cargo build --profile "$profile" --locked --features loadgen --bins

out="bench-results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
results="$out/results.json"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Limits a public server needs are lifted: the generator is one address opening thousands
# of connections and sending as fast as the scenario asks. The heartbeat is relaxed because
# signing in 20,000 clients takes longer than two default heartbeat intervals.
huddle_env=(
  HUDDLE_ADDR=127.0.0.1:0
  HUDDLE_LOG_FORMAT=json
  "HUDDLE_LOG_LEVEL=warn,huddle::server=info,huddle::server::ws=warn,huddle::server::auth=warn"
  HUDDLE_MAX_CONNECTIONS=25000
  HUDDLE_IP_CONNECTS_PER_10S=1000000
  HUDDLE_IP_MAX_OPEN=1000000
  HUDDLE_MSG_RATE_PER_S=10000
  HUDDLE_MSG_BURST=10000
  HUDDLE_REQUEST_RATE_PER_S=10000
  HUDDLE_REQUEST_BURST=100000
  HUDDLE_HEARTBEAT_S=120
)

# Starts a server of the given kind pinned to the server CPU; sets server_pid and addr.
start_server() {
  local kind="$1" log="$work/server.log"
  : > "$log"
  if [ "$kind" = huddle ]; then
    rm -rf "$work/data"
    env "${huddle_env[@]}" ${variant_env[@]+"${variant_env[@]}"} \
      HUDDLE_DATA_DIR="$work/data" HUDDLE_SITE_ROOT="$work/site" \
      taskset -c "$server_cpu" "$huddle_bin" > "$log" 2>&1 &
  else
    taskset -c "$server_cpu" "$bin"/huddle-baseline 127.0.0.1:0 > "$log" 2>&1 &
  fi
  server_pid=$!
  for _ in $(seq 1 200); do
    addr=$(grep -o '"addr":"[^"]*"' "$log" | head -1 | cut -d'"' -f4 || true)
    [ -n "$addr" ] && return 0
    sleep 0.05
  done
  echo "[bench] $kind did not start:" >&2
  cat "$log" >&2
  exit 1
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# run NAME KIND SCENARIO ARGS...: one case against one server kind.
run() {
  local name="$1" kind="$2" scenario="$3"
  shift 3
  if [ -n "$only" ] && [[ "$name" != *"$only"* ]]; then return 0; fi
  start_server "$kind"
  local flags=(--addr "$addr" --server-pid "$server_pid" --json "$results" --round "$round")
  [ "$kind" = baseline ] && flags+=(--baseline)
  [ -n "$variant_label" ] && flags+=(--variant "$variant_label")
  echo "[bench] $name ($kind)"
  taskset -c "$loader_cpu" "$bin"/huddle-loadgen "$scenario" "${flags[@]}" "$@"
  stop_server
}

# both NAME SCENARIO ARGS...: the case against Huddle, then against the baseline.
both() {
  local name="$1"
  shift
  run "$name" huddle "$@"
  run "$name" baseline "$@"
}

# A Huddle server setting that differs from the default, for `variant` runs only.
variant_env=()
variant_label=""

# variant NAME LABEL VAR=VALUE SCENARIO ARGS...: the case against Huddle started with
# VAR=VALUE; the table compares it with the baseline run of the same case.
variant() {
  local name="$1"
  variant_label="$2"
  variant_env=("$3")
  shift 3
  run "$name" huddle "$@"
  variant_env=()
  variant_label=""
}

# Every case once, each Huddle run right beside the baseline run it is compared with.
suite() {
  if [ "$quick" = 1 ]; then
    both idle idle --clients 200 --hold-s 1
    both fanout-small fanout --rooms 2 --members 20 --rate 100 --warmup-s 1 --duration-s 2
    variant fanout-small-normal "synchronous = normal" HUDDLE_SQLITE_SYNCHRONOUS=normal \
      fanout --rooms 2 --members 20 --rate 100 --warmup-s 1 --duration-s 2
    both persist persist --senders 20 --rooms 2 --duration-s 2
    run storm huddle storm --clients 200 --per-room 50 --rate 50 --warmup-s 1
  else
    both idle idle --clients 19900 --hold-s 5
    both fanout-45k fanout --rooms 10 --members 100 --rate 450
    # What the default's power-loss durability costs: the same case with commits that reach
    # the OS (kill -9 safe) but are flushed to disk only at checkpoints.
    variant fanout-45k-normal "synchronous = normal" HUDDLE_SQLITE_SYNCHRONOUS=normal \
      fanout --rooms 10 --members 100 --rate 450
    both fanout-67k fanout --rooms 10 --members 100 --rate 675
    both fanout-1x1000 fanout --rooms 1 --members 1000 --rate 20
    both fanout-1x10000 fanout --rooms 1 --members 10000 --rate 2
    both fanout-100x100 fanout --rooms 100 --members 100 --rate 100
    both persist persist --senders 2000 --rooms 10
    run storm huddle storm --clients 10000 --per-room 100 --rate 100
  fi
}

# The machine's speed drifts within minutes: more rounds give medians, and the table's
# ratio for a case is the median of its rounds' own ratios.
for round in $(seq 1 "$rounds"); do
  if [ "$rounds" -gt 1 ]; then echo "[bench] round $round of $rounds"; fi
  suite
done

"$bin"/huddle-loadgen report "$results" | tee "$out/table.md"
{
  echo
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB;"
  echo "server on CPU $server_cpu, generator on CPU $loader_cpu; $(date -u +%Y-%m-%d)."
} | tee -a "$out/table.md"
echo "[bench] results in $out"
