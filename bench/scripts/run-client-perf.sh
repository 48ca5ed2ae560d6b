#!/usr/bin/env bash
# Standard clients against sluice (issue 18): builds the release broker and loadgen, then runs
# bench/scripts/client_perf.py, which starts one sluice-server (127.0.0.1, data under /var/tmp,
# HTTP console off) and, against it, confluent-kafka and kafka-python producing and consuming
# 100 B messages with 1 and 4 partitions and acks=1 and all (each phase in its own process, the
# client's and the broker's CPU read from /proc over the same window), then loadgen against the
# same broker for comparison (its CPU and the broker's over each run). Prints one line per case;
# the raw output and a JSON report go to OUT.txt and OUT.json; results/README.md has the table.
#
#   bash bench/scripts/run-client-perf.sh        # from the repository root
#
# Environment: PYTHON (.venv/bin/python: a venv made from tests/requirements.txt),
# OUT (results/<date>-client-perf), CONFLUENT_MESSAGES (1000000), KAFKA_PYTHON_MESSAGES
# (200000: kafka-python is much slower), LOADGEN_MESSAGES (1000000), EXTRA (more harness flags,
# e.g. "--cores 1").
set -euo pipefail

PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-results/$(date -u +%F)-client-perf}
CONFLUENT_MESSAGES=${CONFLUENT_MESSAGES:-1000000}
KAFKA_PYTHON_MESSAGES=${KAFKA_PYTHON_MESSAGES:-200000}
LOADGEN_MESSAGES=${LOADGEN_MESSAGES:-1000000}
EXTRA=${EXTRA:-}

cargo build --release -p sluice-server --bin sluice-server -p sluice-bench --bin loadgen

# shellcheck disable=SC2086
"$PYTHON" bench/scripts/client_perf.py \
    --server target/release/sluice-server \
    --loadgen target/release/loadgen \
    --confluent-messages "$CONFLUENT_MESSAGES" \
    --kafka-python-messages "$KAFKA_PYTHON_MESSAGES" \
    --loadgen-messages "$LOADGEN_MESSAGES" \
    --out "$OUT.json" $EXTRA 2>&1 | tee "$OUT.txt"
