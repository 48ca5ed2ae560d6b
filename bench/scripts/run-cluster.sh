#!/usr/bin/env bash
# Replication cost: loadgen 1,000,000 x 100 B acks=all against one broker (RF 1) and against an
# embedded three-broker cluster with RF 3 (every broker a quorum voter with its own data dir,
# real fdatasync on every replica), in interleaved rounds on the same machine, so the ratio is
# measured in one run. All brokers and loadgen share this VM's CPUs. Prints one summary line per
# run; results/README.md has the table.
#
#   bash bench/scripts/run-cluster.sh        # from the repository root
#
# Environment: ROUNDS (2), MESSAGES (1000000), EXTRA (more loadgen flags).
set -euo pipefail

ROUNDS=${ROUNDS:-2}
MESSAGES=${MESSAGES:-1000000}
EXTRA=${EXTRA:-}
cargo build --release -p sluice-bench --bin loadgen
LOADGEN=target/release/loadgen

echo "# $(date -u '+%F %T UTC'), commit $(git rev-parse --short HEAD), $(nproc) vCPUs, $(uname -r)"
for round in $(seq 1 "$ROUNDS"); do
    echo "## round $round, load $(cut -d' ' -f1-3 /proc/loadavg)"
    for setup in "1 1" "3 3"; do
        set -- $setup
        line=$(RUST_LOG=warn "$LOADGEN" --acks all --messages "$MESSAGES" --brokers "$1" \
            --replication-factor "$2" --no-report $EXTRA 2>&1 \
            | grep -E 'records sent|verified' | tr '\n' ' ')
        echo "brokers $1 rf $2: $line"
    done
done
