#!/bin/sh
# Foundation benchmarks: embedded-mode start-up and authenticated request throughput.
#
#   benches/foundation.sh            # release build, 5 start-ups each, 10 s of load per endpoint
#   RUNS=3 DURATION=5s benches/foundation.sh
#
# Needs curl and wrk (Debian: apt-get install wrk). Prints one table; the
# figures in docs/benchmarks.md come from this script.
set -eu
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
PORT=${PORT:-18080}
BIN=target/release/custodian
cargo build --release --quiet
work=$(mktemp -d "${TMPDIR:-/tmp}/custodian-bench.XXXXXX")
chmod 755 "$work"
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
export CUSTODIAN_LOG__FILTER=warn
unset CUSTODIAN_DATABASE__URL || true

now_ms() { date +%s%3N; }

if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
    echo "port $PORT is already in use; stop what listens there or set PORT" >&2
    exit 1
fi

# Starts the server on $1; sets $pid and $elapsed (milliseconds until /readyz answers 200).
start_server() {
    t0=$(now_ms)
    "$BIN" --data-dir "$1" serve --listen "127.0.0.1:$PORT" >/dev/null 2>&1 &
    pid=$!
    until curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
        kill -0 $pid 2>/dev/null || { echo "server died" >&2; exit 1; }
        sleep 0.01
    done
    elapsed=$(( $(now_ms) - t0 ))
}

stop() { kill -TERM $pid; wait $pid 2>/dev/null || true; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

cold=""; warm=""
for i in $(seq "$RUNS"); do
    start_server "$work/cold-$i"; cold="$cold $elapsed"; stop
done
for i in $(seq "$RUNS"); do
    start_server "$work/cold-1"; warm="$warm $elapsed"; stop
done
cold_median=$(echo "$cold" | tr ' ' '\n' | sed '/^$/d' | median)
warm_median=$(echo "$warm" | tr ' ' '\n' | sed '/^$/d' | median)

# Throughput: one warm server, two kinds of credential, /healthz as the ceiling.
start_server "$work/cold-1"
jwt=$("$BIN" --data-dir "$work/cold-1" token issue --user bench --role researcher --ttl 1h)
api_token=$(curl -fs -X POST "http://127.0.0.1:$PORT/api/v1/tokens" -H "Authorization: Bearer $jwt" \
    -H 'content-type: application/json' -d '{"name":"bench"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')

rps() { wrk -t2 -c"$CONNECTIONS" -d"$DURATION" "$@" | awk '/Requests\/sec/ {print $2}'; }
p99() { wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" | awk '$1=="99%" {print $2}'; }

healthz=$(rps "http://127.0.0.1:$PORT/healthz")
me_jwt=$(rps -H "Authorization: Bearer $jwt" "http://127.0.0.1:$PORT/api/v1/me")
cohorts_jwt=$(rps -H "Authorization: Bearer $jwt" "http://127.0.0.1:$PORT/api/v1/cohorts")
cohorts_token=$(rps -H "Authorization: Bearer $api_token" "http://127.0.0.1:$PORT/api/v1/cohorts")
cohorts_p99=$(p99 -H "Authorization: Bearer $jwt" "http://127.0.0.1:$PORT/api/v1/cohorts")
stop

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "machine: $(nproc) cores; wrk -t2 -c$CONNECTIONS -d$DURATION on the same machine"
echo
echo "| measurement | result |"
echo "|---|---|"
echo "| cold start (initdb + migrations + listen), median of $RUNS | ${cold_median} ms (runs:${cold}) |"
echo "| warm restart (existing cluster), median of $RUNS | ${warm_median} ms (runs:${warm}) |"
echo "| GET /healthz (framework ceiling) | ${healthz} req/s |"
echo "| GET /api/v1/me, JWT (auth only) | ${me_jwt} req/s ($(ratio "$me_jwt" "$healthz") x ceiling) |"
echo "| GET /api/v1/cohorts, JWT (auth + DB query) | ${cohorts_jwt} req/s ($(ratio "$cohorts_jwt" "$healthz") x ceiling), p99 ${cohorts_p99} |"
echo "| GET /api/v1/cohorts, API token (DB lookup + query) | ${cohorts_token} req/s ($(ratio "$cohorts_token" "$healthz") x ceiling) |"
