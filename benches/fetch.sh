#!/bin/sh
# Release download benchmark (issue 16): the demo's approved project's release
# (its 2,000+ files) fetched three ways from one server, side by side in one run:
#
#   1. `custodian fetch --parallel 8` (signature, resume bookkeeping and the
#      SHA-256 of every file included);
#   2. `curl`, one process per file, one file after the other;
#   3. `wget` over the list of file URLs (one process, keep-alive, sequential:
#      what `wget -r` does once it knows the links);
#
# then, for the two plain clients, the `sha256sum --check` that verifying
# their copies costs, and `custodian fetch` again into the complete directory
# (every file found present by its digest). Wall time and the client's CPU
# (user + sys) from /usr/bin/time; the server's CPU is not counted.
#
#   benches/fetch.sh
#   PARALLEL=4 benches/fetch.sh
#   BIN=target/debug/custodian benches/fetch.sh   # no release build
#
# Starts `custodian serve --demo` on its own data directory (embedded
# PostgreSQL from the system's binaries) and needs curl, wget, jq and time.
set -eu
cd "$(dirname "$0")/.."
PORT=${PORT:-18480}
PARALLEL=${PARALLEL:-8}

if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=$PWD/target/release/custodian
fi


work=$(mktemp -d "${TMPDIR:-/tmp}/custodian-fetch.XXXXXX")
chmod 755 "$work"
server=
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

"$BIN" serve --demo --data-dir "$work/data" --listen "127.0.0.1:$PORT" >"$work/serve.log" 2>&1 &
server=$!
until grep -q "is listening" "$work/serve.log"; do
    kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
    sleep 1
done
. "$work/data/demo-tokens.env"
S=http://127.0.0.1:$PORT
B=$S/api/v1
AUTH="Authorization: Bearer $RESEARCHER"
P=$(curl -fsS -H "$AUTH" "$B/projects" | jq -r '.projects[] | select(.title | startswith("Brain ageing")) | .id')
E=$(curl -fsS -X POST -H "$AUTH" -H 'content-type: application/json' -d '{}' "$B/projects/$P/extracts" | jq -r .id)
until [ "$(curl -fsS -H "$AUTH" "$B/extracts/$E" | jq -r .state)" = ready ]; do sleep 1; done
curl -fsS -H "$AUTH" "$B/extracts/$E/manifest" >"$work/manifest.json"
jq -r '.files[].path' "$work/manifest.json" >"$work/paths"
jq -r --arg b "$B/extracts/$E/files/" '.files[] | $b + .path' "$work/manifest.json" >"$work/urls"
jq -r '.files[] | "\(.sha256)  \(.path)"' "$work/manifest.json" >"$work/sums"
files=$(jq .totals.files "$work/manifest.json")
bytes=$(jq .totals.bytes "$work/manifest.json")
echo "release $E: $files files, $bytes bytes; client CPU only; $(nproc) cores"

# timed NAME COMMAND…: one row of the table (wall, user, sys seconds), on the
# script's stdout whatever the command's is.
exec 3>&1
timed() {
    name=$1
    shift
    /usr/bin/time -f '%e %U %S' -o "$work/time" "$@"
    read -r wall user sys <"$work/time"
    rate=$(echo "$bytes $wall" | awk '{ printf "%.1f", $1 / 1048576 / ($2 > 0 ? $2 : 0.01) }')
    printf '| %-44s | %8s | %7s | %7s | %9s |\n' "$name" "$wall" "$user" "$sys" "$rate" >&3
}

export AUTH B E work
export CUSTODIAN_TOKEN="$RESEARCHER"

echo '| client | wall s | user s | sys s | MiB/s |'
echo '|---|---:|---:|---:|---:|'
timed "custodian fetch --parallel $PARALLEL (verified)" \
    "$BIN" fetch --server "$S" --extract "$E" --out "$work/fetch" --parallel "$PARALLEL" >"$work/fetch.log"
timed "curl, one file after the other" sh -c '
    while read -r path; do
        curl -fsS -H "$AUTH" --create-dirs -o "$work/curl/$path" "$B/extracts/$E/files/$path"
    done <"$work/paths"'
timed "  + sha256sum --check of curl's copies" sh -c "cd '$work/curl' && sha256sum --check --quiet '$work/sums'"
timed "wget -i URLS (sequential, keep-alive)" \
    wget -q --header "$AUTH" -x -nH --cut-dirs=5 -P "$work/wget" -i "$work/urls"
timed "  + sha256sum --check of wget's copies" sh -c "cd '$work/wget' && sha256sum --check --quiet '$work/sums'"
timed "custodian fetch again (all present, re-hashed)" \
    "$BIN" fetch --server "$S" --extract "$E" --out "$work/fetch" --parallel "$PARALLEL" >>"$work/fetch.log"
cat "$work/fetch.log"
