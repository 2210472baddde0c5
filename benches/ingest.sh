#!/bin/sh
# Ingest benchmark: two synthetic CT corpora pushed end to end into Custodian,
# side by side in the same run with Orthanc (REST and C-STORE) and a plain
# copy of the same bytes followed by `sync`.
#
#   benches/ingest.sh                      # 2,000 files per corpus, 4 connections, 3 rounds
#   COUNT=500 benches/ingest.sh            # quicker
#   CORPORA=large benches/ingest.sh        # one corpus only
#
# Batched uploads carry up to $BATCH files and 16 MiB per request.
# Needs Orthanc, DCMTK and curl (Debian: apt-get install orthanc dcmtk curl).
# Every contender writes into a new directory and nothing is deleted until the
# end: on a file system without a journal, inode allocation right after a mass
# delete is several times slower, which would punish whoever runs next.
set -eu
cd "$(dirname "$0")/.."
COUNT=${COUNT:-2000}
CONNECTIONS=${CONNECTIONS:-4}
BATCH=${BATCH:-100}
REPEAT=${REPEAT:-3}
PORT=${PORT:-18080}
DICOM_PORT=${DICOM_PORT:-11112}
ORTHANC_HTTP=${ORTHANC_HTTP:-18042}
ORTHANC_DICOM=${ORTHANC_DICOM:-14242}
BIN=$PWD/target/release/custodian

cargo build --release --quiet
cargo bench --bench ingest_load --no-run --quiet 2>/dev/null
LOAD=$(ls -t target/release/deps/ingest_load-* | grep -v '\.d$' | head -1)

work=$(mktemp -d "${TMPDIR:-/tmp}/custodian-ingest.XXXXXX")
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

if curl -s -o /dev/null "http://127.0.0.1:$PORT/" || curl -s -o /dev/null "http://127.0.0.1:$ORTHANC_HTTP/"; then
    echo "port $PORT or $ORTHANC_HTTP is already in use; stop what listens there or set PORT / ORTHANC_HTTP" >&2
    exit 1
fi

echo "generating corpora ($COUNT files each)..." >&2
"$LOAD" gen "$work/small" 128 "$COUNT"
"$LOAD" gen "$work/large" 512 "$COUNT"
sync
cat "$work"/small/* "$work"/large/* >/dev/null # into the page cache for every contender alike
# A quarter of the large corpus, to show peak memory does not grow with the number of files.
mkdir "$work/quarter"
ls "$work/large" | head -n $((COUNT / 4)) | while read -r f; do ln "$work/large/$f" "$work/quarter/$f"; done

run=0
# Starts Custodian on a new data directory; sets $pid, $dir and $token.
start_custodian() {
    sync # nothing of an earlier contender left for this one to write back
    run=$((run + 1))
    dir="$work/custodian-$run"
    mkdir -p "$dir"
    cat >"$dir/custodian.toml" <<EOF
[dicom]
peers = [{ ae_title = "BENCH", site = "local", cohort = "default" }]
EOF
    "$BIN" --config "$dir/custodian.toml" --data-dir "$dir" serve --listen "127.0.0.1:$PORT" \
        --dicom-port "$DICOM_PORT" >"$dir/server.log" 2>&1 &
    pid=$!
    until curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
        sleep 0.1
    done
    token=$("$BIN" --config "$dir/custodian.toml" --data-dir "$dir" token issue --user bench --role uploader --ttl 1h)
}

start_orthanc() {
    sync
    run=$((run + 1))
    dir="$work/orthanc-$run"
    mkdir -p "$dir"
    cat >"$dir/orthanc.json" <<EOF
{ "Name": "bench", "StorageDirectory": "$dir/db", "IndexDirectory": "$dir/db",
  "HttpPort": $ORTHANC_HTTP, "DicomPort": $ORTHANC_DICOM, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "Plugins": [] }
EOF
    Orthanc "$dir/orthanc.json" >"$dir/orthanc.log" 2>&1 &
    pid=$!
    until curl -fs "http://127.0.0.1:$ORTHANC_HTTP/system" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/orthanc.log" >&2; exit 1; }
        sleep 0.1
    done
}

# Peak resident memory of $pid, in MB.
peak_mb() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status"; }

stop() {
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
}

# storescu over $CONNECTIONS associations, one per slice of the corpus; prints seconds.
cstore() { # corpus calling-ae called-ae port
    ls "$work/$1"/*.dcm | split -n "r/$CONNECTIONS" - "$work/list-$run-"
    t0=$(date +%s.%N)
    for list in "$work/list-$run-"*; do
        TCP_NODELAY=1 xargs -a "$list" storescu -xs -aet "$2" -aec "$3" 127.0.0.1 "$4" &
    done
    wait # runs in a subshell: waits for the storescu processes only
    t1=$(date +%s.%N)
    rm -f "$work/list-$run-"*
    echo "$t0 $t1" | awk '{ printf "%.3f", $2 - $1 }'
}

row() { # label corpus seconds [peak-mb]
    bytes=$(du -sbL "$work/$2" | cut -f1)
    files=$(ls "$work/$2" | wc -l)
    echo "$1 $2 $3 $bytes ${4:--} $files" |
        awk '{ printf "| %-50s | %-7s | %5d | %7.0f | %6.1f | %5s |\n", $1, $2, $6, $6 / $3, $4 / $3 / 1e6, $5 }' | tr '_' ' '
}

echo "| path | corpus | files | instances/s | MB/s | peak RSS MB |"
echo "|---|---|---:|---:|---:|---:|"
# One REST run: rest <orthanc|single|batched> <corpus>; sets $seconds and leaves the server running.
rest() {
    case $1 in
    orthanc)
        start_orthanc
        "$LOAD" orthanc "http://127.0.0.1:$ORTHANC_HTTP" "$work/$2" "$CONNECTIONS" >"$work/out" ;;
    single)
        start_custodian
        "$LOAD" custodian "http://127.0.0.1:$PORT" "$token" "$work/$2" "$CONNECTIONS" 1 >"$work/out" ;;
    batched)
        start_custodian
        "$LOAD" custodian "http://127.0.0.1:$PORT" "$token" "$work/$2" "$CONNECTIONS" "$BATCH" >"$work/out" ;;
    esac
    seconds=$(cut -d' ' -f3 "$work/out")
}

for corpus in ${CORPORA:-small large}; do
    # The REST contenders take turns for REPEAT rounds, so that a slow moment
    # of the machine falls on all of them alike; every round is printed, and
    # the ratios of each round go to the summary.
    for round in $(seq "$REPEAT"); do
        rest orthanc "$corpus"; orthanc=$seconds
        row "Orthanc_REST_POST_/instances_(round_$round)" "$corpus" "$seconds" "$(peak_mb)"; stop
        rest single "$corpus"; single=$seconds
        row "Custodian_REST,_1_file_per_request_(round_$round)" "$corpus" "$seconds" "$(peak_mb)"; stop
        rest batched "$corpus"; batched=$seconds
        row "Custodian_REST,_${BATCH}_files_per_request_(round_$round)" "$corpus" "$seconds" "$(peak_mb)"; stop
        # C-STORE takes turns too: it is the figure a busy machine moves most.
        start_orthanc
        seconds=$(cstore "$corpus" BENCH ORTHANC "$ORTHANC_DICOM"); orthanc_cstore=$seconds
        row "Orthanc_C-STORE_(storescu,_round_$round)" "$corpus" "$seconds" "$(peak_mb)"; stop
        start_custodian
        seconds=$(cstore "$corpus" BENCH CUSTODIAN "$DICOM_PORT"); custodian_cstore=$seconds
        row "Custodian_C-STORE_(storescu,_round_$round)" "$corpus" "$seconds" "$(peak_mb)"; stop
        echo "$corpus $orthanc $single $batched $orthanc_cstore $custodian_cstore" >>"$work/rounds"
    done

    run=$((run + 1))
    sync
    t0=$(date +%s.%N); cp -r "$work/$corpus" "$work/copy-$run"; sync; t1=$(date +%s.%N)
    copy=$(echo "$t0 $t1" | awk '{ printf "%.3f", $2 - $1 }')
    row "cp_-r_+_sync" "$corpus" "$copy"
    echo "$corpus $copy" >>"$work/copies"
done

start_custodian
seconds=$("$LOAD" custodian "http://127.0.0.1:$PORT" "$token" "$work/quarter" "$CONNECTIONS" "$BATCH" | cut -d' ' -f3)
row "Custodian_REST,_${BATCH}_files_per_request" quarter "$seconds" "$(peak_mb)"; stop

# Summary: per corpus, the ratio of each round (speed-up = Orthanc's time / Custodian's) and their median.
echo
echo "| corpus | batched ÷ Orthanc, per round | median | 1 file per request ÷ Orthanc, median | batched ÷ cp + sync, median | C-STORE ÷ Orthanc C-STORE, per round | median |"
echo "|---|---|---:|---:|---:|---|---:|"
for corpus in ${CORPORA:-small large}; do
    copy=$(awk -v c="$corpus" '$1 == c { print $2 }' "$work/copies")
    awk -v c="$corpus" -v copy="$copy" '
        $1 == c { n++; b[n] = $2 / $4; s[n] = $2 / $3; k[n] = copy / $4; d[n] = $5 / $6 }
        function median(a, n,   i, j, t) {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        END {
            rounds = ""; dimse = ""
            for (i = 1; i <= n; i++) rounds = rounds sprintf("%s%.2f", (i > 1 ? ", " : ""), b[i])
            for (i = 1; i <= n; i++) dimse = dimse sprintf("%s%.2f", (i > 1 ? ", " : ""), d[i])
            printf "| %s | %s | %.2f × | %.2f × | %.0f %% | %s | %.2f × |\n", c, rounds, median(b, n), median(s, n), 100 * median(k, n), dimse, median(d, n)
        }' "$work/rounds"
done
