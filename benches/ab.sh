#!/bin/sh
# A/B of server binaries on one ingest path: the binaries take turns for
# ROUNDS rounds (in reverse order every other round), each on a fresh data
# directory, and every run prints its instances/s and the CPU seconds of the
# server and of its PostgreSQL.
#
#   benches/ab.sh rest   CORPUS BIN_A BIN_B [BIN…]   # batched REST (BATCH=100)
#   BATCH=1 benches/ab.sh rest CORPUS A B            # one file per request
#   benches/ab.sh cstore CORPUS BIN_A BIN_B          # 4 storescu associations
#
# Build a corpus with the load tool, e.g.
#   cargo bench --bench ingest_load --no-run
#   target/release/deps/ingest_load-<hash> gen /tmp/large 512 2000
# Copy each binary out of target/ first (cp target/release/custodian /tmp/custodian-a).
# Environment variables (CUSTODIAN_…) pass through to every server.
set -eu
cd "$(dirname "$0")/.."
MODE=$1; CORPUS=$2; shift 2
ROUNDS=${ROUNDS:-3}
BATCH=${BATCH:-100}
CONNECTIONS=${CONNECTIONS:-4}
PORT=${PORT:-18080}
DICOM_PORT=${DICOM_PORT:-11112}
LOAD=$(ls -t target/release/deps/ingest_load-* 2>/dev/null | grep -v '\.d$' | head -1)
[ -n "$LOAD" ] || { echo "build the load tool first: cargo bench --bench ingest_load --no-run" >&2; exit 1; }
export CUSTODIAN_LOG__FILTER=${CUSTODIAN_LOG__FILTER:-warn}
work=$(mktemp -d "${TMPDIR:-/tmp}/custodian-ab.XXXXXX")
chmod 755 "$work"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
files=$(ls "$CORPUS" | wc -l)
cat "$CORPUS"/* >/dev/null

cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }

run() { # binary run-number
    dir="$work/$2"
    mkdir -p "$dir"
    printf '[dicom]\npeers = [{ ae_title = "BENCH", site = "local", cohort = "default" }]\n' >"$dir/custodian.toml"
    sync
    "$1" --config "$dir/custodian.toml" --data-dir "$dir" serve --listen "127.0.0.1:$PORT" \
        --dicom-port "$DICOM_PORT" >"$dir/server.log" 2>&1 &
    pid=$!
    until curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
        sleep 0.1
    done
    before=$(cpu "$pid")
    t0=$(date +%s.%N)
    case $MODE in
    rest)
        token=$("$1" --config "$dir/custodian.toml" --data-dir "$dir" token issue --user bench --role uploader --ttl 1h)
        t0=$(date +%s.%N)
        "$LOAD" custodian "http://127.0.0.1:$PORT" "$token" "$CORPUS" "$CONNECTIONS" "$BATCH" >/dev/null ;;
    cstore)
        ls "$CORPUS"/*.dcm | split -n "r/$CONNECTIONS" - "$dir/list-"
        senders=""
        for list in "$dir/list-"*; do
            TCP_NODELAY=1 xargs -a "$list" storescu -xs -aet BENCH -aec CUSTODIAN 127.0.0.1 "$DICOM_PORT" &
            senders="$senders $!"
        done
        for sender in $senders; do wait "$sender" || true; done ;;
    *) echo "mode must be rest or cstore" >&2; exit 2 ;;
    esac
    t1=$(date +%s.%N)
    server=$(echo "$(cpu "$pid") $before" | awk '{ printf "%.2f", $1 - $2 }')
    pg=0
    for p in $(pgrep -f "postgres: .*custodian" 2>/dev/null); do
        case $(readlink "/proc/$p/cwd" 2>/dev/null) in "$dir"/*) pg=$(echo "$pg $(cpu "$p")" | awk '{ printf "%.2f", $1 + $2 }') ;; esac
    done
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    echo "$t0 $t1 $files $server $pg" |
        awk -v b="$1" '{ printf "%-40s %7.0f instances/s   server CPU %5.2f s   PostgreSQL CPU %5.2f s\n", b, $3 / ($2 - $1), $4, $5 }'
}

# Whoever runs first in a round tends to run faster (the file system is
# emptier), so the order is reversed every other round.
n=0
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 0 ]; then order=$(printf '%s\n' "$@" | tac); else order=$(printf '%s\n' "$@"); fi
    for binary in $order; do
        n=$((n + 1))
        run "$binary" "$n"
    done
done
