#!/bin/sh
# Memory under hostile input: peak resident memory of the server above its
# idle level while it answers one hostile request, per request.
#
#   benches/hostile-memory.sh                               # this checkout
#   BASELINE=/path/to/older/custodian benches/hostile-memory.sh   # and an older binary, side by side
#   ONLY_BASELINE=1 BASELINE=... benches/hostile-memory.sh          # the older binary alone
#   CASES='largest|zip' benches/hostile-memory.sh                     # only requests whose name matches
#
# For each request the server starts afresh on its own data directory, its
# idle resident memory (VmRSS) is read once it is ready, its peak counter
# (VmHWM) is reset (`echo 5 > /proc/<pid>/clear_refs`, so start-up does not
# count), the request is sent, and the peak and what is still resident are
# read when the answer is in. Prints one line per request and binary:
#   <binary> <request> <http status> <peak above idle, MiB> <retained above idle, MiB>
# and fails when a peak is more than $BOUND_MIB (256) above idle for this checkout.
# Needs curl and python3; run as root (or as the owner of the server process).
set -eu
cd "$(dirname "$0")/.."
PORT=${PORT:-18081}
BOUND_MIB=${BOUND_MIB:-256}
MIB=$((1024 * 1024))
BIN=$PWD/target/release/custodian

cargo build --release --quiet
cargo bench --bench ingest_load --no-run --quiet 2>/dev/null
LOAD=$(ls -t target/release/deps/ingest_load-* | grep -v '\.d$' | head -1)

work=$(mktemp -d "${TMPDIR:-/tmp}/custodian-hostile.XXXXXX")
chmod 755 "$work"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export CUSTODIAN_LOG__FILTER=warn
unset CUSTODIAN_DATABASE__URL || true

if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
    echo "port $PORT is already in use; stop what listens there or set PORT" >&2
    exit 1
fi

echo "generating hostile bodies..." >&2
python3 - "$work" <<'EOF'
import sys, zipfile
work = sys.argv[1]
MIB = 1024 * 1024
with open(f"{work}/header.csv", "wb") as f:  # a 100 MB header line
    f.write(b"a" * (100 * MIB) + b"\n")
with open(f"{work}/row.csv", "wb") as f:  # a 100 MB single row
    f.write(b"patient_id,sex\nP1," + b"F" * (100 * MIB) + b"\n")
with zipfile.ZipFile(f"{work}/zeros.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    chunk = bytes(MIB)
    for i in range(4):  # 4 x 255 MiB of zeros, about 1 MB compressed
        with z.open(f"zeros{i}", "w") as entry:
            for _ in range(255):
                entry.write(chunk)
LIMIT = 32 * MIB - 64  # the largest legal tables: just under ingest.max_table_bytes
with open(f"{work}/subjects.csv", "wb") as f:  # the most rows a table can have
    f.write(b"patient_id,sex,birth_year\n")
    size, i = 26, 0
    while True:
        row = b"P%08d,%s,%d\n" % (i, b"FM"[i % 2 : i % 2 + 1], 1930 + i % 70)
        if size + len(row) > LIMIT:
            break
        f.write(row)
        size += len(row)
        i += 1
with open(f"{work}/subjects-cap.csv", "wb") as f:  # the most patients an import may name
    f.write(b"patient_id,sex,birth_year\n")
    for i in range(200_000):  # ingest.max_table_patients
        f.write(b"P%08d,%s,%d\n" % (i, b"FM"[i % 2 : i % 2 + 1], 1930 + i % 70))
with open(f"{work}/labs.csv", "wb") as f:  # lab values of 20,000 patients
    f.write(b"patient_id,code,value,unit,time\n")
    size, i = 32, 0
    while True:
        row = b"P%08d,glucose,%d.%d,mmol/L,2021-01-%02d\n" % (i % 20000, 4 + i % 5, i % 10, 1 + i % 28)
        if size + len(row) > LIMIT:
            break
        f.write(row)
        size += len(row)
        i += 1
with zipfile.ZipFile(f"{work}/many.zip", "w", zipfile.ZIP_DEFLATED) as z:
    for i in range(50_000):  # ingest.zip_max_entries small entries
        z.writestr(f"e/{i}", b"x" * 100)
EOF
# The largest legal file: one CT slice just under ingest.max_file_bytes (240 MiB).
"$LOAD" gen "$work/large" 11200 1 >/dev/null
large=$(ls "$work"/large/* | head -1)
ls -l "$work"/*.csv "$work"/*.zip "$large" | awk '{print "  " $5 " bytes  " $NF}' >&2

kib() { awk -v key="$1:" '$1 == key {print $2}' "/proc/$pid/status"; }

# Starts a binary on a new data directory; sets $pid, $token, $idle (KiB).
start() {
    dir="$work/run-$(date +%s%N)"
    mkdir -p "$dir"
    "$1" --data-dir "$dir" serve --listen "127.0.0.1:$PORT" >"$dir/server.log" 2>&1 &
    pid=$!
    until curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
        sleep 0.1
    done
    token=$("$1" --data-dir "$dir" token issue --user bench --role uploader --ttl 1h)
    sleep 1 # let start-up work (migrations, the first jobs) settle
    idle=$(kib VmRSS)
    echo 5 >"/proc/$pid/clear_refs"
}

stop() {
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
}

# measure <label> <binary> <request> <url path> <content type> <file>
failed=0
measure() {
    echo "$3" | grep -Eq "${CASES:-.}" || return 0
    start "$2"
    url="http://127.0.0.1:$PORT$4"
    if [ "$4" = upload ]; then
        session=$(curl -fs -X POST -H "Authorization: Bearer $token" -H 'content-type: application/json' \
            -d '{}' "http://127.0.0.1:$PORT/api/v1/uploads" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
        url="http://127.0.0.1:$PORT/api/v1/uploads/$session/files"
    fi
    if [ "$5" = multipart ]; then # the file twice, as two parts of one batch
        status=$(curl -s -o "$work/answer" -w '%{http_code}' -X POST -H "Authorization: Bearer $token" \
            -F "a=@$6;type=application/dicom" -F "b=@$6;type=application/dicom" "$url" || true)
    else
        status=$(curl -s -o "$work/answer" -w '%{http_code}' -X POST -H "Authorization: Bearer $token" \
            -H "content-type: $5" --data-binary "@$6" "$url" || true)
    fi
    peak=$(($(kib VmHWM) - idle))
    retained=$(($(kib VmRSS) - idle))
    stop
    awk -v b="$1" -v r="$3" -v s="$status" -v p="$peak" -v k="$retained" \
        'BEGIN { printf "%-9s %-24s %s  %8.1f %8.1f\n", b, r, s, p / 1024, k / 1024 }'
    if [ "$1" = this ] && [ "$peak" -gt $((BOUND_MIB * 1024)) ]; then
        failed=1
    fi
}

run() {
    measure "$1" "$2" "csv-100MB-header-line" /api/v1/imports/subjects text/csv "$work/header.csv"
    measure "$1" "$2" "csv-100MB-single-row" /api/v1/imports/subjects text/csv "$work/row.csv"
    measure "$1" "$2" "subjects-csv-32MiB-2.2M-patients" /api/v1/imports/subjects text/csv "$work/subjects.csv"
    measure "$1" "$2" "subjects-csv-200000-patients" /api/v1/imports/subjects text/csv "$work/subjects-cap.csv"
    measure "$1" "$2" "labs-csv-32MiB-largest" /api/v1/imports/observations text/csv "$work/labs.csv"
    measure "$1" "$2" "zip-4x255MiB-zeros" upload application/zip "$work/zeros.zip"
    measure "$1" "$2" "zip-50000-entries" upload application/zip "$work/many.zip"
    measure "$1" "$2" "dicom-240MiB-largest" upload application/dicom "$large"
    measure "$1" "$2" "multipart-2x-largest" upload multipart "$large"
}

echo "binary    request                  http  peak-MiB retained-MiB (above idle)"
[ -n "${BASELINE:-}" ] && run baseline "$BASELINE"
[ -n "${ONLY_BASELINE:-}" ] || run this "$BIN"
exit $failed
