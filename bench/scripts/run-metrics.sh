#!/usr/bin/env bash
# Cost of observability: loadgen acks=all, 100 B, against its embedded broker with the HTTP
# listener off (sluice.http.listen empty) and on with /metrics scraped every second (the
# Prometheus default is 15 s; 1 s is the worst case), in interleaved rounds so the
# ratio is measured in one run. The per-shard counters are always kept (plain Cell adds per
# request, per fdatasync and per write); "off" removes the listener and the scrapes. Prints
# one summary line per run and the scrape count; results/README.md has the table.
#
#   bash bench/scripts/run-metrics.sh        # from the repository root
#
# BASELINE=path/to/loadgen (optional) adds a run of a loadgen built from a commit before the
# counters existed (e.g. aa21ec4), which shows what the always-on counters cost.
#
# Environment: ROUNDS (3), MESSAGES (30000000: a 1M run lasts well under a second here, too
# short for a 1 s scrape interval to matter; 30M take about 8 s), EVERY (1, seconds between scrapes), PORT (19644),
# EXTRA (more loadgen flags).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-30000000}
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

baseline() {
    RUST_LOG=warn "$BASELINE" --acks all --messages "$MESSAGES" --message-size 100 \
        --no-report $EXTRA 2>&1 | grep -E 'records sent|verified' | tr '\n' ' '
}

echo "# $(date -u '+%F %T UTC'), commit $(git rev-parse --short HEAD), $(nproc) vCPUs, $(uname -r)"
for round in $(seq 1 "$ROUNDS"); do
    echo "## round $round, load $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ -n "${BASELINE:-}" ]; then echo "before the counters: $(baseline)"; fi
    # alternate which goes first, so an order effect does not pass for a cost
    if [ $((round % 2)) = 1 ]; then echo "metrics off: $(run '')"; fi
    scrapes=$(mktemp)
    (
        while true; do
            curl -s -o /dev/null -w '%{http_code} %{time_total}\n' \
                "http://127.0.0.1:$PORT/metrics" >>"$scrapes" 2>/dev/null || true
            sleep "$EVERY"
        done
    ) &
    scraper=$!
    line=$(run "127.0.0.1:$PORT")
    kill "$scraper" 2>/dev/null || true
    wait "$scraper" 2>/dev/null || true
    scraped=$(awk '$1 == 200 {n++; s+=$2; if ($2>m) m=$2} END {printf "%d times, mean %.1f ms, max %.1f ms", n, n ? s/n*1000 : 0, m*1000}' "$scrapes")
    echo "metrics on, scraped $scraped: $line"
    rm -f "$scrapes"
    if [ $((round % 2)) = 0 ]; then echo "metrics off: $(run '')"; fi
done
