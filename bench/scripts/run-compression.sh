#!/usr/bin/env bash
# Cost of compression: loadgen acks=all, 100 B (kafka-producer-perf-test's payload: one random
# letter string per producer, so every codec shrinks it a lot), against its embedded broker:
#   none                      producer sends uncompressed, stored as sent
#   lz4 / zstd                producer compresses, stored as sent (codec framing walked)
#   zstd-full                 as zstd with sluice.compression.validation=full (decompressed and
#                             every record parsed on produce)
#   none->lz4 / none->zstd    topic compression.type makes the broker compress
#   lz4->zstd                 the broker recompresses
# in interleaved rounds (the order rotates), so ratios are measured in one run. Prints one summary
# line per run with the bytes the partition's segment files hold.
#
#   bash bench/scripts/run-compression.sh      # from the repository root
#
# Environment: ROUNDS (3), MESSAGES (5000000), EXTRA (more loadgen flags).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-5000000}
EXTRA=${EXTRA:-}
cargo build --release -p sluice-bench --bin loadgen
LOADGEN=target/release/loadgen
WORK=$(mktemp -d /var/tmp/sluice-compression.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# name | producer codec | broker settings (space-separated KEY=VALUE)
CASES=(
    "none|none|"
    "lz4|lz4|"
    "zstd|zstd|"
    "zstd-full|zstd|sluice.compression.validation=full"
    "none->lz4|none|compression.type=lz4"
    "none->lz4-1|none|compression.type=lz4 compression.lz4.level=1"
    "none->zstd|none|compression.type=zstd"
    "lz4->zstd|lz4|compression.type=zstd"
)

run() {
    local name=$1 codec=$2 cfg=$3
    local dir="$WORK/$RANDOM"
    mkdir -p "$dir"
    local flags=(--acks all --messages "$MESSAGES" --message-size 100 --compression "$codec"
        --no-report --keep-data --data-dir "$dir")
    for kv in $cfg; do flags+=(--broker-config "$kv"); done
    local out
    # shellcheck disable=SC2086
    out=$(RUST_LOG=warn "$LOADGEN" "${flags[@]}" $EXTRA 2>&1 | grep -E 'records sent|verified' | tr '\n' ' ')
    local bytes
    bytes=$(find "$dir" -path '*loadgen-*' -name '*.log' -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    echo "$name: $out on-disk-bytes=$bytes"
    rm -rf "$dir"
}

echo "# $(date -u '+%F %T UTC'), commit $(git rev-parse --short HEAD), $(nproc) vCPUs, $(uname -r)"
n=${#CASES[@]}
for round in $(seq 1 "$ROUNDS"); do
    echo "## round $round, load $(cut -d' ' -f1-3 /proc/loadavg)"
    for i in $(seq 0 $((n - 1))); do
        IFS='|' read -r name codec cfg <<<"${CASES[$(((i + round - 1) % n))]}"
        run "$name" "$codec" "$cfg"
    done
done
