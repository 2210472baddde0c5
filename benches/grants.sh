#!/bin/sh
# Grant-check benchmark: the cost the grant check adds to a file request, with
# 10,000 active grants over 1,000 projects, side by side with the same request
# without the check, in one run.
#
#   benches/grants.sh                 # 20,000 requests each way
#   REQUESTS=2000 benches/grants.sh
#
# Needs PostgreSQL 15 server binaries (PGBIN).
set -eu
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-20000}
PGPORT=${PGPORT:-15445}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

cargo bench --bench grant_check --no-run --quiet 2>/dev/null
BENCH=$(ls -t target/release/deps/grant_check-* | grep -v '\.d$' | head -1)

work=$(mktemp -d "${TMPDIR:-/tmp}/custodian-grants.XXXXXX")
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
as_pg "$PGBIN/initdb" -D "$work/pg" -A trust -U custodian --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
    -o "-p $PGPORT -k $work/pg -c listen_addresses=127.0.0.1 -c jit=off" start >/dev/null
psql -X -q "postgres://custodian@127.0.0.1:$PGPORT/postgres" -c "create database custodian" >/dev/null
"$BENCH" "postgres://custodian@127.0.0.1:$PGPORT/custodian" "$REQUESTS"
