#!/usr/bin/env bash
# Runs the cargo-fuzz targets one after another (see README.md "Fuzzing"):
#   fuzz/run.sh [runs] [target...]       default: 10000000 runs of every target
#   FUZZ_SECONDS=600 fuzz/run.sh ...     also stop each target after this many seconds
#   FUZZ_SANITIZER=none fuzz/run.sh ...  build without AddressSanitizer (default: address);
#                                        debug assertions and overflow checks stay on
# Needs `cargo +nightly` and `cargo install cargo-fuzz`. The corpus starts from each target's
# seeds (fuzz/corpus/<target>, not committed); crashes land in fuzz/artifacts/<target>/ and,
# once fixed, belong in fuzz/regressions/<target>/ (replayed by server/tests/fuzz_targets.rs).
# Logs: fuzz/logs/<target>.log (libFuzzer's final stats at the end), one line per target in
# fuzz/logs/summary.txt.
set -uo pipefail
cd "$(dirname "$0")"
runs=${1:-10000000}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request_frame produce_batch segment_scan sasl tls_handshake)
fi
bin=target/x86_64-unknown-linux-gnu/release
sanitizer=${FUZZ_SANITIZER:-address}
if [ "$sanitizer" = none ]; then
    # without a sanitizer runtime only libFuzzer defines the coverage symbols, so the seeds
    # binary (no libFuzzer) is built by plain cargo and only the targets by cargo-fuzz
    for t in "${targets[@]}"; do
        cargo +nightly fuzz build --sanitizer none "$t" || exit 1
    done
    cargo +nightly build --release --bin seeds || exit 1
    seeds=target/release/seeds
else
    cargo +nightly fuzz build --sanitizer "$sanitizer" || exit 1
    seeds=$bin/seeds
fi
"$seeds" corpus || exit 1
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "artifacts/$t"
    start=$(date +%s)
    nice -n 10 "$bin/$t" "corpus/$t" -runs="$runs" -max_total_time="${FUZZ_SECONDS:-0}" \
        -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" > "logs/$t.log" 2>&1
    rc=$?
    end=$(date +%s)
    echo "$t: exit $rc, $((end - start)) s, corpus $(ls "corpus/$t" | wc -l) files," \
        "$(grep -o 'cov: [0-9]*' "logs/$t.log" | tail -1)," \
        "$(grep -o 'number_of_executed_units: *[0-9]*' "logs/$t.log")" | tee -a logs/summary.txt
done
