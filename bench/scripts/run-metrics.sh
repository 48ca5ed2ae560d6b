#!/usr/bin/env bash
# Cost of observability: loadgen acks=all, 100 B, against its embedded broker with the HTTP
# listener off (sluice.http.listen empty) and on with /metrics scraped every second (the
# Prometheus default is 15 s; 1 s is the issue's worst case), in interleaved rounds so the
# ratio is measured in one run. The per-shard counters are always kept (plain Cell adds per
# request, per fdatasync and per write); "off" removes the listener and the scrapes. Prints
# one summary line per run and the scrape count; results/README.md has the table.
#
#   bash bench/scripts/run-metrics.sh        # from the repository root
#
# Environment: ROUNDS (3), MESSAGES (10000000: a 1M run lasts well under a second here, too
# short for a 1 s scrape interval to matter), EVERY (1, seconds between scrapes), PORT (19644),
# EXTRA (more loadgen flags).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-10000000}
EVERY=${EVERY:-1}
PORT=${PORT:-19644}
EXTRA=${EXTRA:-}
cargo build --release -p sluice-bench --bin loadgen
LOADGEN=target/release/loadgen

run() {
    RUST_LOG=warn "$LOADGEN" --acks all --messages "$MESSAGES" --message-size 100 \
        --no-report --broker-config "sluice.http.listen=$1" $EXTRA 2>&1 \
        | grep -E 'records sent|verified' | tr '\n' ' '
}

echo "# $(date -u '+%F %T UTC'), commit $(git rev-parse --short HEAD), $(nproc) vCPUs, $(uname -r)"
for round in $(seq 1 "$ROUNDS"); do
    echo "## round $round, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "metrics off: $(run '')"
    scrapes=$(mktemp)
    (
        while true; do
            if curl -sf -o /dev/null "http://127.0.0.1:$PORT/metrics"; then echo ok >>"$scrapes"; fi
            sleep "$EVERY"
        done
    ) &
    scraper=$!
    line=$(run "127.0.0.1:$PORT")
    kill "$scraper" 2>/dev/null || true
    wait "$scraper" 2>/dev/null || true
    echo "metrics on, scraped $(wc -l <"$scrapes") times: $line"
    rm -f "$scrapes"
done
