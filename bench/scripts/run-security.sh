#!/usr/bin/env bash
# Cost of transport security: loadgen acks=all against its embedded broker over PLAINTEXT, SSL
# (rustls, copy path for fetches) and SASL_SSL (PLAIN over TLS), 100 B and 1 KiB messages, in
# interleaved rounds on the same machine so the ratios are measured in one run. Broker and
# loadgen share this VM's CPUs. Prints one summary line per run; results/README.md has the table.
#
#   bash bench/scripts/run-security.sh        # from the repository root
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
    for size in 100 1024; do
        for security in plaintext ssl sasl_ssl; do
            line=$(RUST_LOG=warn "$LOADGEN" --acks all --messages "$MESSAGES" \
                --message-size "$size" --security "$security" --no-report $EXTRA 2>&1 \
                | grep -E 'records sent|verified' | tr '\n' ' ')
            echo "size $size $security: $line"
        done
    done
done
