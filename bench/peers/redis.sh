#!/usr/bin/env bash
# redis.sh runs Lattice and Redis side by side on durable writes and prints
# a table with their ratios. Not part of `make test`.
#
# One region (`lattice serve`, one-region cluster) and one redis-server
# (appendonly yes) with the same durability: DURABILITY=always (default;
# Redis appendfsync always) or everysec (appendfsync everysec). Each server
# is pinned to core SERVER_CPU (default 0), its load generator to LOAD_CPU
# (default 1). At 1, 16 and 64 clients (CLIENTS), each over its own
# keep-alive connection with one request in flight (no pipelining):
#
#   - Lattice: POST /v1/carts/bench-G-K/items {"sku":"sku-N","qty":1}, each
#     client adding 8 skus to a cart before moving to a fresh one, sent by
#     the repository's load generator (cmd/server's test binary run as
#     TestHTTPLoadGenerator, GOMAXPROCS=1), every answer checked;
#   - Redis: HINCRBY cart:<random> sku 1 from redis-benchmark -P 1.
#
# A pair is one Lattice run and one Redis run of WRITES writes (default
# 20000) at the same concurrency; PAIRS pairs (default 3) are interleaved,
# alternating which goes first. Each run reports ops/s, p99 as its client
# saw it, and the server's CPU time per write (utime + stime of the server
# process from /proc, over the run). Needs Go (PATH), taskset, and root or
# sudo to apt-get install redis-server and redis-tools if they are missing.
#
# ANSWER=minimal makes the Lattice side ask for answers without the cart
# (Prefer: return=minimal, answered 204 with the causal token), closer to
# HINCRBY's answer of one integer; the default, ANSWER=cart, is answered
# with the whole cart as JSON.
#
#   bench/peers/redis.sh                       # always, 3 pairs
#   DURABILITY=everysec PAIRS=5 bench/peers/redis.sh
#   ANSWER=minimal CLIENTS=64 bench/peers/redis.sh
set -euo pipefail

DURABILITY=${DURABILITY:-always}
ANSWER=${ANSWER:-cart}
PAIRS=${PAIRS:-3}
WRITES=${WRITES:-20000}
CLIENTS=${CLIENTS:-"1 16 64"}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
LATTICE_PORT=${LATTICE_PORT:-17101}
REDIS_PORT=${REDIS_PORT:-17379}

case $DURABILITY in
always | everysec) ;;
*) echo "redis.sh: DURABILITY must be always or everysec, not \"$DURABILITY\"" >&2; exit 2 ;;
esac
case $ANSWER in
cart | minimal) ;;
*) echo "redis.sh: ANSWER must be cart or minimal, not \"$ANSWER\"" >&2; exit 2 ;;
esac
for v in PAIRS WRITES SERVER_CPU LOAD_CPU LATTICE_PORT REDIS_PORT; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -eq 0 -a "$v" != SERVER_CPU -a "$v" != LOAD_CPU ]; then
		echo "redis.sh: $v must be a positive integer, not \"${!v}\"" >&2
		exit 2
	fi
done
for c in $CLIENTS; do
	[[ $c =~ ^[1-9][0-9]*$ ]] || { echo "redis.sh: CLIENTS must hold positive integers, not \"$c\"" >&2; exit 2; }
done

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
fi

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "building lattice and the load generator..." >&2
(cd "$root" && go build -o "$work/lattice" ./cmd/lattice && go test -c -o "$work/loadgen" ./cmd/server/)

# cpu_ticks prints the CPU time (user + system) of process $1 in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# wait_for runs $@ until it succeeds, for at most 10 s.
wait_for() {
	for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "redis.sh: timed out waiting for: $*" >&2
	exit 1
}

# run_lattice CLIENTS prints "ops/s p99-ms cpu-us/write" of one run on a
# fresh region.
run_lattice() {
	local dir="$work/lattice-$1-$RANDOM"
	mkdir -p "$dir"
	cat >"$dir/lattice.yaml" <<YAML
cluster: peers
data_dir: data
durability: $DURABILITY
regions:
  - name: us-east
    api: 127.0.0.1:$LATTICE_PORT
    peer: 127.0.0.1:$((LATTICE_PORT + 100))
YAML
	taskset -c "$SERVER_CPU" "$work/lattice" serve --config "$dir/lattice.yaml" --region us-east --log-level error >"$dir/log" 2>&1 &
	srv_pid=$!
	trap 'kill $srv_pid 2>/dev/null || true' EXIT # this runs in a subshell: $(run_lattice)
	wait_for curl -sf "http://127.0.0.1:$LATTICE_PORT/readyz"
	local t0 t1 out
	out=$( (sleep 0.5; echo go) | {
		t0=$(cpu_ticks "$srv_pid")
		LATTICE_BENCH_LOADGEN="127.0.0.1:$LATTICE_PORT $1 $WRITES 0" LATTICE_BENCH_LOADGEN_PREFER="$ANSWER" GOMAXPROCS=1 taskset -c "$LOAD_CPU" "$work/loadgen"
		t1=$(cpu_ticks "$srv_pid")
		echo "cpu $((t1 - t0))"
	})
	kill "$srv_pid"
	wait "$srv_pid" 2>/dev/null || true
	local res ticks
	res=$(grep '^result ' <<<"$out" | cut -d' ' -f2-)
	ticks=$(grep '^cpu ' <<<"$out" | cut -d' ' -f2)
	if grep -q '"err"' <<<"$res"; then
		echo "redis.sh: lattice load generator: $res" >&2
		exit 1
	fi
	python3 - "$res" "$ticks" "$hz" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); ticks, hz = int(sys.argv[2]), int(sys.argv[3])
print(f"{r['writes'] / r['seconds']:.0f} {r['p99_ms']:.2f} {ticks / hz * 1e6 / r['writes']:.1f}")
PY
}

# run_redis CLIENTS prints "ops/s p99-ms cpu-us/write" of one run on a
# fresh redis-server.
run_redis() {
	local dir="$work/redis-$1-$RANDOM"
	mkdir -p "$dir"
	taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$dir" \
		--appendonly yes --appendfsync "$DURABILITY" --save "" --daemonize no --logfile "$dir/log" &
	srv_pid=$!
	trap 'kill $srv_pid 2>/dev/null || true' EXIT # this runs in a subshell: $(run_redis)
	wait_for redis-cli -p "$REDIS_PORT" ping
	local t0 t1 csv
	t0=$(cpu_ticks "$srv_pid")
	csv=$(taskset -c "$LOAD_CPU" redis-benchmark -p "$REDIS_PORT" -c "$1" -n "$WRITES" -P 1 -r 1000000 --csv \
		hincrby cart:__rand_int__ sku 1)
	t1=$(cpu_ticks "$srv_pid")
	kill "$srv_pid"
	wait "$srv_pid" 2>/dev/null || true
	# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
	tail -1 <<<"$csv" | tr -d '"' | awk -F, -v t=$((t1 - t0)) -v hz="$hz" -v n="$WRITES" \
		'{printf "%.0f %.2f %.1f\n", $2, $7, t / hz * 1e6 / n}'
}

results="$work/results"
: >"$results"
for pair in $(seq "$PAIRS"); do
	for c in $CLIENTS; do
		if [ $((pair % 2)) -eq 1 ]; then
			l=$(run_lattice "$c"); r=$(run_redis "$c")
		else
			r=$(run_redis "$c"); l=$(run_lattice "$c")
		fi
		echo "$c $pair $l $r" | tee -a "$results" >&2
	done
done

python3 - "$results" "$DURABILITY" "$PAIRS" "$WRITES" "$ANSWER" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
print(f"durability {sys.argv[2]}, Lattice answers: {sys.argv[5]}, {sys.argv[3]} interleaved pairs of {sys.argv[4]} writes; median (range)")
print()
print("| clients | Redis ops/s | Lattice ops/s | ratio | p99 ms Redis / Lattice | CPU µs per write Redis / Lattice |")
print("|--:|--:|--:|--:|--:|--:|")
def mr(xs, f="{:.0f}"):
    return f"{f.format(statistics.median(xs))} ({f.format(min(xs))}–{f.format(max(xs))})"
for c in sorted({int(r[0]) for r in rows}):
    rs = [list(map(float, r[2:])) for r in rows if int(r[0]) == c]
    lops, lp99, lcpu, rops, rp99, rcpu = zip(*rs)
    ratio = [l / r for l, r in zip(lops, rops)]
    print(f"| {c} | {mr(rops)} | {mr(lops)} | {mr(ratio, '{:.2f}')} | "
          f"{mr(rp99, '{:.2f}')} / {mr(lp99, '{:.2f}')} | {mr(rcpu, '{:.1f}')} / {mr(lcpu, '{:.1f}')} |")
PY
