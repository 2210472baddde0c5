#!/bin/sh
# Discovery benchmark: a synthetic registry (default 100,000 subjects, about
# 1,000,000 instances, 2,000,000 lab values, 500,000 genotypes), 20 count and
# breakdown queries through the HTTP API side by side with the same queries
# written by hand in SQL and run with psql against the same database; then a
# lab-value import through the API side by side with PostgreSQL COPY of the
# same rows into the same table.
#
#   benches/discovery.sh                     # 100,000 subjects, 30 runs per query
#   SUBJECTS=10000 RUNS=10 benches/discovery.sh
#   QUERIES=0 benches/discovery.sh          # the lab import only
#   INDEX=0 benches/discovery.sh            # without the in-memory index: PostgreSQL answers
#
# Needs PostgreSQL 15 server binaries (PGBIN) and psql.
set -eu
cd "$(dirname "$0")/.."
SUBJECTS=${SUBJECTS:-100000}
RUNS=${RUNS:-30}
LAB_PATIENTS=${LAB_PATIENTS:-50000}
LAB_ROWS=${LAB_ROWS:-20}
PORT=${PORT:-18081}
PGPORT=${PGPORT:-15444}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BIN=$PWD/target/release/custodian

cargo build --release --quiet
cargo bench --bench discovery_load --no-run --quiet 2>/dev/null
LOAD=$(ls -t target/release/deps/discovery_load-* | grep -v '\.d$' | head -1)

work=$(mktemp -d "${TMPDIR:-/tmp}/custodian-discovery.XXXXXX")
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    wait 2>/dev/null || true
    as_pg "$PGBIN/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
    echo "port $PORT is already in use; stop what listens there or set PORT" >&2
    exit 1
fi
mkdir "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
as_pg "$PGBIN/initdb" -D "$work/pg" -A trust -U custodian --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
    -o "-p $PGPORT -k $work/pg -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c work_mem=64MB -c jit=off" start >/dev/null
URL="postgres://custodian@127.0.0.1:$PGPORT/custodian"
psql -X -q "postgres://custodian@127.0.0.1:$PGPORT/postgres" -c "create database custodian" >/dev/null

export CUSTODIAN_DATABASE__URL="$URL"
# Secrets for this run only.
export CUSTODIAN_AUTH__HS256_SECRET="s$(od -An -tx1 -N32 /dev/urandom | tr -d " \n")"
export CUSTODIAN_DEID__REGISTRY_KEY="k$(od -An -tx1 -N32 /dev/urandom | tr -d " \n")"
export CUSTODIAN_LOG__FILTER=warn
mkdir "$work/data"
custodian() { "$BIN" --data-dir "$work/data" "$@"; }

echo "generating a synthetic registry of $SUBJECTS subjects..." >&2
t0=$(date +%s.%N)
custodian demo --subjects "$SUBJECTS" --catalog-only >"$work/demo.log" 2>&1 || { cat "$work/demo.log" >&2; exit 1; }
grep "^generated" "$work/demo.log" >&2 || true
t1=$(date +%s.%N)
echo "generation took $(echo "$t1 - $t0" | bc) s" >&2
psql -X -q -t -A "$URL" -c "select 'rows: ' || (select count(*) from subject) || ' subjects, ' || (select count(*) from study) || ' studies, ' || (select count(*) from series) || ' series, ' || (select count(*) from instance) || ' instances, ' || (select count(*) from observation) || ' lab values, ' || (select count(*) from genotype) || ' genotypes'" >&2

# INDEX=0: the service answers every exact query from PostgreSQL (no in-memory index).
export CUSTODIAN_DISCOVERY__MEMORY_INDEX=$([ "${INDEX:-1}" = 0 ] && echo false || echo true)
# The researcher of the protected run may ask every query every run.
export CUSTODIAN_DISCOVERY__BUDGET_UNITS=100000000
"$BIN" --data-dir "$work/data" serve --listen "127.0.0.1:$PORT" >"$work/server.log" 2>&1 &
pid=$!
until curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.2
done
if [ "${INDEX:-1}" != 0 ]; then
    # The index is built at start-up, in the background; measure it once it is there.
    until curl -fs "http://127.0.0.1:$PORT/metrics" | grep -Eq '^custodian_discovery_index_units [1-9]'; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
        sleep 0.5
    done
    curl -fs "http://127.0.0.1:$PORT/metrics" | grep -E '^custodian_discovery_index_(units|build_seconds) ' >&2
    echo "service resident memory with the index: $(($(ps -o rss= -p "$pid") / 1024)) MiB" >&2
fi
steward=$(custodian token issue --user bench-steward --role steward --ttl 2h)
researcher=$(custodian token issue --user bench-researcher --role researcher --ttl 2h)
uploader=$(custodian token issue --user bench-uploader --role uploader --ttl 2h)

if [ "${QUERIES:-1}" = 1 ]; then
echo "running 20 queries x $RUNS through the API and through psql..." >&2
"$LOAD" api "http://127.0.0.1:$PORT" "$steward" benches/discovery_queries.json "$RUNS" >"$work/api.tsv"
"$LOAD" sql benches/discovery_queries.json "$RUNS" >"$work/queries.sql"
psql -X -q "$URL" -f "$work/queries.sql" >"$work/psql.out"
echo
echo "Query latency in ms, $RUNS runs each after 2 warm-ups (API: steward, exact counts, audited):"
echo
"$LOAD" report "$work/api.tsv" "$work/psql.out" benches/discovery_queries.json

echo "running the same 20 queries x $RUNS as a researcher (protected counts)..." >&2
"$LOAD" api "http://127.0.0.1:$PORT" "$researcher" benches/discovery_queries.json "$RUNS" >"$work/protected.tsv"
echo
echo "Protected counts (researcher: cell keys, anchors, budget) against exact counts (steward), in ms:"
echo
"$LOAD" compare "$work/api.tsv" "$work/protected.tsv"

fi

echo "importing $((LAB_PATIENTS * LAB_ROWS)) lab values through the API and with COPY..." >&2
"$LOAD" labs "$work/labs.csv" "$LAB_PATIENTS" "$LAB_ROWS"
t0=$(date +%s.%N)
curl -fsS -o "$work/import.json" -H "Authorization: Bearer $uploader" -H 'Content-Type: text/csv' \
    --data-binary @"$work/labs.csv" "http://127.0.0.1:$PORT/api/v1/imports/observations?cohort=demo-neuro-mri&site=uhb"
t1=$(date +%s.%N)
import_id=$(sed 's/.*"id":"\([^"]*\)".*/\1/' "$work/import.json")
rows=$(sed 's/.*"values":\([0-9]*\).*/\1/' "$work/import.json")
psql -X -q "$URL" -c "\\copy (select subject_id, field_id, value, value_code, observed_at, data_import_id from observation where data_import_id = '$import_id') to '$work/rows.tsv'"
t2=$(date +%s.%N)
psql -X -q "$URL" -c "\\copy observation (subject_id, field_id, value, value_code, observed_at, data_import_id) from '$work/rows.tsv'"
t3=$(date +%s.%N)
api_rate=$(echo "$rows / ($t1 - $t0)" | bc)
copy_rate=$(echo "$rows / ($t3 - $t2)" | bc)
echo
echo "| lab values | API import (CSV over HTTP: parse, check, pseudonymize, convert units, COPY, commit) | psql copy of the same rows | API ÷ COPY |"
echo "|---:|---:|---:|---:|"
echo "| $rows | $api_rate rows/s | $copy_rate rows/s | $(echo "scale=0; 100 * $api_rate / $copy_rate" | bc) % |"
