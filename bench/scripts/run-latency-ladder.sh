#!/usr/bin/env bash
# Send-to-ack latency against load: acks=all and acks=1 at fixed rates (1 partition, 100 B,
# --linger-ms 0.1, e2e with verification), next to the disk's own floor (one bare O_DIRECT
# write + fdatasync, bench/examples/disk_floor.rs), in interleaved rounds so drifts of a shared
# machine hit every case alike. Prints one summary line per run; results/README.md has the table.
#
#   bash bench/scripts/run-latency-ladder.sh        # from the repository root
#
# Environment: ROUNDS (3), RATES ("20000 200000 1000000 1500000"), EXTRA (more loadgen flags).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
RATES=${RATES:-20000 200000 1000000 1500000}
EXTRA=${EXTRA:-}
cargo build --release -p sluice-bench --bin loadgen --example disk_floor
LOADGEN=target/release/loadgen

echo "# $(date -u '+%F %T UTC'), commit $(git rev-parse --short HEAD), $(nproc) vCPUs, $(uname -r)"
for round in $(seq 1 "$ROUNDS"); do
    echo "## round $round, load $(cut -d' ' -f1-3 /proc/loadavg)"
    target/release/examples/disk_floor --rounds 1000 | sed "s/^/disk_floor: /"
    for rate in $RATES; do
        # about 5 s of load per run, 100k to 1M messages
        n=$((rate * 5))
        n=$((n < 100000 ? 100000 : n > 1000000 ? 1000000 : n))
        for acks in all 1; do
            line=$("$LOADGEN" --acks "$acks" --rate "$rate" --messages "$n" --linger-ms 0.1 \
                --no-report $EXTRA 2>&1 | grep -E 'records sent|verified' | tr '\n' ' ')
            echo "rate $rate acks $acks: $line"
        done
    done
done
