#!/usr/bin/env bash
# Side by side with a peer: the same loadgen settings against Tansu (a Kafka-compatible broker
# in Rust, SQLite storage) and against sluice (embedded), back to back on this machine, then
# `loadgen compare`. Nothing of Tansu is vendored: it is installed from the crate registry.
#
#   cargo install tansu --features libsql --locked      # once; SQLite storage needs libsql
#   bash bench/scripts/compare-tansu.sh                 # from the repository root
#
# Settings (environment): MESSAGES (1000000), SIZE (100), PARTITIONS (1), ACKS (all),
# OUT (results), PORT (19092), TANSU (tansu on PATH), EXTRA (more loadgen flags).
#
# Notes: Tansu 0.6 puts a tagged field into Fetch v12 responses that v12 does not define;
# loadgen's client then falls back to Fetch v11 for that broker.
#
# Storage and durability of the peer: Tansu's sqlite:// engine opens the database with
# journal_mode=WAL and synchronous=NORMAL, so a commit is written to the WAL but not fsync'd
# (fsync happens at checkpoints): it survives a crash of the process, not of the machine.
# sluice at acks=all answers only after an fdatasync covering the batch.
set -euo pipefail

MESSAGES=${MESSAGES:-1000000}
SIZE=${SIZE:-100}
PARTITIONS=${PARTITIONS:-1}
ACKS=${ACKS:-all}
OUT=${OUT:-results}
PORT=${PORT:-19092}
TANSU=${TANSU:-tansu}
EXTRA=${EXTRA:-}

command -v "$TANSU" >/dev/null || {
    echo "tansu not found: cargo install tansu --features libsql --locked" >&2
    exit 2
}
cargo build --release -p sluice-bench
LOADGEN=target/release/loadgen

work=$(mktemp -d /var/tmp/tansu-XXXXXX) # real disk, not tmpfs
# the sqlite:// path is relative to the working directory (an absolute one loses its "/")
(cd "$work" && RUST_LOG=warn exec "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine "sqlite://tansu.db" >"$work/tansu.log" 2>&1) &
tansu_pid=$!
trap 'kill $tansu_pid 2>/dev/null || true; wait $tansu_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

common=(--messages "$MESSAGES" --message-size "$SIZE" --partitions "$PARTITIONS" --acks "$ACKS"
    --output "$OUT" --topic "loadgen-peer-p$PARTITIONS" $EXTRA)
label="acks-$ACKS-p$PARTITIONS-${SIZE}b"

run() { # prints the report directory of a loadgen run (which may fail verification)
    local log
    log=$(mktemp)
    "$LOADGEN" "$@" | tee "$log" >&2 || true
    sed -n 's/^reports written to //p' "$log"
    rm -f "$log"
}

echo "== tansu (sqlite, WAL, synchronous=NORMAL) on 127.0.0.1:$PORT" >&2
tansu_dir=$(run -b "127.0.0.1:$PORT" --label "tansu-sqlite-$label" "${common[@]}")
kill $tansu_pid 2>/dev/null || true
wait $tansu_pid 2>/dev/null || true

echo "== sluice (embedded, O_DIRECT + fdatasync)" >&2
sluice_dir=$(run --label "sluice-$label" "${common[@]}")

[ -n "$tansu_dir" ] && [ -n "$sluice_dir" ] || {
    echo "a run wrote no report" >&2
    exit 1
}
"$LOADGEN" compare "$sluice_dir" "$tansu_dir" \
    --output "$OUT/$(date -u +%F)-compare-sluice-vs-tansu-$label"
