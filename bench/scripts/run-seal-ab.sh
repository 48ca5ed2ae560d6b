#!/usr/bin/env bash
# Two builds side by side, interleaved round by round (issue 18: segment seals and the other
# metadata-file writes moved off the reactor). Each round runs, for BASE then HEAD:
#   1. loadgen 1,000,000 x SIZE B, acks=all, PARTITIONS partitions, embedded broker with
#      log.segment.bytes=SEGMENT (1 MiB: about a hundred seals per run): throughput, p99, p99.9;
#   2. stop time: a sluice-server with STOP_PARTITIONS partitions that all hold data
#      (STOP_MESSAGES messages spread over them), SIGTERM to exit (every log closes: index
#      files, snapshot, partition.meta), then the restart until it accepts connections.
#
#   git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release \
#       -p sluice-bench --bin loadgen -p sluice-server --bin sluice-server)
#   cargo build --release -p sluice-bench --bin loadgen -p sluice-server --bin sluice-server
#   BASE=/tmp/base/target/release HEAD=target/release bash bench/scripts/run-seal-ab.sh
#
# Settings (environment): ROUNDS (3), MESSAGES (1000000), SIZE (100), PARTITIONS (4),
# SEGMENT (1048576), STOP_PARTITIONS (1000), STOP_MESSAGES (200000), PORT (19392).
set -euo pipefail

BASE=${BASE:?set BASE to the directory of the base build (loadgen, sluice-server)}
HEAD=${HEAD:-target/release}
ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-1000000}
SIZE=${SIZE:-100}
PARTITIONS=${PARTITIONS:-4}
SEGMENT=${SEGMENT:-1048576}
STOP_PARTITIONS=${STOP_PARTITIONS:-1000}
STOP_MESSAGES=${STOP_MESSAGES:-200000}
PORT=${PORT:-19392}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

wait_port() {
    local deadline=$(($(now_ms) + 60000))
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
        [ "$(now_ms)" -lt "$deadline" ] || { echo "port $PORT never opened" >&2; return 1; }
        sleep 0.02
    done
}

start_server() { # bin dir -> pid in $SERVER
    "$1/sluice-server" --listen "127.0.0.1:$PORT" --data-dir "$2" \
        --override sluice.http.listen= >"$2.log" 2>&1 &
    SERVER=$!
}

stop_time() { # name bin
    local dir t0 t1 t2
    dir=$(mktemp -d "${TMPDIR:-/var/tmp}/seal-ab.XXXXXX")
    start_server "$2" "$dir"
    wait_port
    RUST_LOG=warn "$HEAD/loadgen" -b "127.0.0.1:$PORT" --topic stop \
        --partitions "$STOP_PARTITIONS" --messages "$STOP_MESSAGES" --acks all --message-size "$SIZE" \
        --no-report 2>&1 | grep -E 'verified' | tr '\n' ' '
    t0=$(now_ms)
    kill -TERM "$SERVER"
    wait "$SERVER" || true
    t1=$(now_ms)
    start_server "$2" "$dir"
    wait_port
    t2=$(now_ms)
    kill -TERM "$SERVER"
    wait "$SERVER" || true
    echo "$1 stop with $STOP_PARTITIONS partitions: $((t1 - t0)) ms; restart to listening: $((t2 - t1)) ms"
    rm -rf "$dir" "$dir.log"
}

echo "# $(date -u '+%F %T UTC'), base $BASE, head $HEAD, $(nproc) vCPUs, $(uname -r)"
echo "# loadgen --messages $MESSAGES --size $SIZE --acks all --partitions $PARTITIONS --broker-config log.segment.bytes=$SEGMENT"
for round in $(seq 1 "$ROUNDS"); do
    for side in base head; do
        bin=$BASE
        [ "$side" = head ] && bin=$HEAD
        line=$(RUST_LOG=warn "$bin/loadgen" --acks all --messages "$MESSAGES" --message-size "$SIZE" \
            --partitions "$PARTITIONS" --broker-config "log.segment.bytes=$SEGMENT" --no-report 2>&1 \
            | grep -E 'records sent|verified' | tr '\n' ' ')
        echo "round $round $side load $(cut -d' ' -f1 /proc/loadavg): $line"
    done
    for side in base head; do
        bin=$BASE
        [ "$side" = head ] && bin=$HEAD
        echo "round $round $(stop_time "$side" "$bin")"
    done
done
