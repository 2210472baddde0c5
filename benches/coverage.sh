#!/bin/sh
# Dictionary coverage refresh: the query the `dictionary.coverage` job runs
# (per field, cohort and threshold class, with the sum of record keys, for the
# cell key method) side by side with the query it replaced (rounded counts per
# field and cohort, commit ebf121e), on the same synthetic registry, run
# alternately. Both are read from the source (this tree, and git history), so
# what is timed is what ships.
#
#   benches/coverage.sh                      # 100,000 subjects, 5 runs each
#   SUBJECTS=20000 RUNS=3 benches/coverage.sh
#
# Needs PostgreSQL 15 server binaries (PGBIN), psql and git.
set -eu
cd "$(dirname "$0")/.."
SUBJECTS=${SUBJECTS:-100000}
RUNS=${RUNS:-5}
PGPORT=${PGPORT:-15445}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BIN=$PWD/target/release/custodian
cargo build --release --quiet

work=$(mktemp -d "${TMPDIR:-/tmp}/custodian-coverage.XXXXXX")
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# The two queries as SELECTs (what they would write, counted).
sed -n '/        with thresholds as (/,/^        from sums$/p' src/dictionary/db.rs |
    sed '/insert into field_coverage/,$d' >"$work/new.sql"
echo "select count(*) from sums;" >>"$work/new.sql"
git show ebf121e:src/dictionary/db.rs | sed -n '/        with members as (/,/insert into field_coverage/p' |
    sed '$d' >"$work/old.sql"
echo "select count(*) from counts where subjects > 0;" >>"$work/old.sql"

mkdir "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
as_pg "$PGBIN/initdb" -D "$work/pg" -A trust -U custodian --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
    -o "-p $PGPORT -k $work/pg -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c work_mem=64MB -c jit=off" start >/dev/null
URL="postgres://custodian@127.0.0.1:$PGPORT/custodian"
psql -X -q "postgres://custodian@127.0.0.1:$PGPORT/postgres" -c "create database custodian" >/dev/null
export CUSTODIAN_DATABASE__URL="$URL"
export CUSTODIAN_AUTH__HS256_SECRET="s$(od -An -tx1 -N32 /dev/urandom | tr -d " \n")"
export CUSTODIAN_DEID__REGISTRY_KEY="k$(od -An -tx1 -N32 /dev/urandom | tr -d " \n")"
export CUSTODIAN_LOG__FILTER=warn
mkdir "$work/data"
echo "generating a synthetic registry of $SUBJECTS subjects..." >&2
"$BIN" --data-dir "$work/data" demo --subjects "$SUBJECTS" --catalog-only >"$work/demo.log" 2>&1 || { cat "$work/demo.log" >&2; exit 1; }
psql -X -q "$URL" -c "vacuum analyze" >/dev/null

ms() { # the query's wall time in milliseconds
    t0=$(date +%s%N)
    psql -X -q -t -A "$URL" -f "$1" >/dev/null
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
old_times="" new_times=""
i=0
while [ "$i" -lt "$RUNS" ]; do
    old_times="$old_times $(ms "$work/old.sql")"
    new_times="$new_times $(ms "$work/new.sql")"
    i=$((i + 1))
done
median() { echo "$@" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
old=$(median $old_times)
new=$(median $new_times)
echo "coverage refresh, $SUBJECTS subjects, median of $RUNS runs each, alternating"
echo "  before (rounded counts per field and cohort):              $old ms   (runs:$old_times)"
echo "  now (per threshold class, with record-key sums):           $new ms   (runs:$new_times)"
echo "  cells written now: $(psql -X -q -t -A "$URL" -f "$work/new.sql"), before: $(psql -X -q -t -A "$URL" -f "$work/old.sql")"
echo "  ratio now / before: $(echo "scale=2; $new / $old" | bc)"
