#!/usr/bin/env bash
# The loadgen benchmark matrix committed in results/: acks=all and acks=1, 1 and 4 partitions,
# 100 B and 1 KiB messages, 1,000,000 messages each, against the embedded sluice broker; then
# loadgen's own ceiling (null sink) and each 100 B acks=all case again at half its measured
# rate (latency at half load). Prints a Markdown table for results/README.md.
#
#   bash bench/scripts/run-matrix.sh            # from the repository root
#
# Environment: MESSAGES (1000000), OUT (results), EXTRA (more loadgen flags), HALF_EXTRA (flags
# for the half-rate runs only, after EXTRA: e.g. "--linger-ms 0.1" for a latency setting).
set -euo pipefail

MESSAGES=${MESSAGES:-1000000}
OUT=${OUT:-results}
EXTRA=${EXTRA:-}
HALF_EXTRA=${HALF_EXTRA:-}
cargo build --release -p sluice-bench
LOADGEN=target/release/loadgen

run() { # prints the report directory
    local log
    log=$(mktemp)
    "$LOADGEN" --messages "$MESSAGES" --output "$OUT" $EXTRA "$@" | tee "$log" >&2 || true
    sed -n 's/^reports written to //p' "$log"
    rm -f "$log"
}

field() { # field DIR JQ-LIKE-PATH: a number from summary.json (python3, no jq needed)
    python3 -c 'import json,sys
d=json.load(open(sys.argv[1]+"/summary.json"))
for k in sys.argv[2].split("."):
    d=d.get(k) if isinstance(d,dict) else None
    if d is None: break
print("nan" if d is None else d)' "$1" "$2"
}

row() {
    local d=$1
    printf '| %s | %s | %s | %s | %.0f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %s | %s | [%s](%s) |\n' \
        "$(field "$d" config.acks | sed 's/^-1$/all/')" "$(field "$d" config.partitions)" \
        "$(field "$d" config.message_size)" "$(field "$d" config.rate | sed 's/^0$/max/')" \
        "$(field "$d" produce.messages_per_sec)" "$(field "$d" produce.mb_per_sec)" \
        "$(field "$d" produce_latency.p50_ms)" "$(field "$d" produce_latency.p99_ms)" \
        "$(field "$d" produce_latency.p999_ms)" "$(field "$d" produce_latency.max_ms)" \
        "$(field "$d" e2e_latency.p99_ms)" \
        "$(field "$d" verification.lost)/$(field "$d" verification.duplicated)" \
        "$(field "$d" machine.load_average_at_start | cut -d' ' -f1)" \
        "$(basename "$d")" "$(basename "$d")"
}

dirs=()
for size in 100 1024; do
    for parts in 1 4; do
        for acks in all 1; do
            dirs+=("$(run --acks "$acks" --partitions "$parts" --message-size "$size")")
        done
    done
done
null_dir=$(run --null-sink --acks 1 --label null-sink-p1-100b)
half=()
for d in "${dirs[@]}"; do
    if [ "$(field "$d" config.acks)" = "-1" ] && [ "$(field "$d" config.message_size)" = "100" ]; then
        rate=$(python3 -c 'import sys; print(int(float(sys.argv[1])/2))' "$(field "$d" produce.messages_per_sec)")
        half+=("$(run --acks all --partitions "$(field "$d" config.partitions)" --rate "$rate" $HALF_EXTRA)")
    fi
done

echo
echo '| acks | partitions | size (B) | rate | msg/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | e2e p99 ms | lost/dup | load | report |'
echo '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
for d in "${dirs[@]}" "${half[@]}"; do row "$d"; done
echo
echo "null sink (loadgen's own ceiling): $(field "$null_dir" produce.messages_per_sec) msg/s"
