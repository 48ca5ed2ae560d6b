#!/usr/bin/env bash
# The cost of idempotence and transactions committed in results/: plain acks=all vs
# --idempotent vs --transactional, 1 and 4 partitions, 1,000,000 messages of 100 B, against the
# embedded sluice broker. ROUNDS rounds; within a round the three modes run back to back in a
# rotating order (A,B,C / B,C,A / C,A,B ...) so that noise from other work on the machine hits
# all of them alike. Prints a Markdown table (medians, ratios to plain acks=all) for
# results/README.md and keeps every run's summary lines in OUT/<date>-idempotence-cost.txt.
#
#   bash bench/scripts/run-idempotence-cost.sh            # from the repository root
#
# Environment: MESSAGES (1000000), ROUNDS (3), OUT (results), EXTRA (more loadgen flags),
# LOADGEN (a loadgen binary; default: build target/release/loadgen).
set -euo pipefail

MESSAGES=${MESSAGES:-1000000}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-results}
EXTRA=${EXTRA:-}
if [ -z "${LOADGEN:-}" ]; then
    cargo build --release -p sluice-bench --bin loadgen
    LOADGEN=target/release/loadgen
fi
mkdir -p "$OUT"
LOG="$OUT/$(date -u +%Y-%m-%d)-idempotence-cost.txt"
{
    echo "# loadgen: cost of idempotence and transactions, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) vCPU, $(uname -r)"
    echo "# $LOADGEN --messages $MESSAGES --message-size 100 --acks all --partitions P [--idempotent | --transactional] $EXTRA (defaults otherwise; --txn-messages 10000), rotating order per round"
} >>"$LOG"

flags() { # mode -> loadgen flags
    case $1 in
    plain) echo "" ;;
    idempotent) echo "--idempotent" ;;
    transactional) echo "--transactional" ;;
    esac
}

dirs=()
modes=(plain idempotent transactional)
for round in $(seq 1 "$ROUNDS"); do
    for parts in 1 4; do
        for i in 0 1 2; do
            mode=${modes[$(((i + round - 1) % 3))]}
            label="sluice-acks-all-p$parts-100b-$mode-r$round"
            echo "## round $round partitions=$parts mode=$mode load=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$LOG"
            tmp=$(mktemp)
            # shellcheck disable=SC2046,SC2086
            "$LOADGEN" --messages "$MESSAGES" --message-size 100 --acks all --partitions "$parts" \
                $(flags "$mode") --output "$OUT" --label "$label" $EXTRA | tee "$tmp" >&2 || true
            grep -v '^reports written to \|^note: ' "$tmp" >>"$LOG" || true
            dirs+=("$(sed -n 's/^reports written to //p' "$tmp")")
            rm -f "$tmp"
        done
    done
done

python3 - "${dirs[@]}" <<'EOF'
import json, os, statistics, sys

runs = {}
for d in sys.argv[1:]:
    if not d:
        continue
    s = json.load(open(os.path.join(d, "summary.json")))
    key = (s["config"]["partitions"], s.get("producer_mode") or "plain")
    runs.setdefault(key, []).append((d, s))

def n(x):
    return f"{x:,.0f}".replace(",", " ")

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

print("| partitions | mode | runs | median msg/s | min–max msg/s | × plain | median p99 ms | × plain | median e2e p99 ms | commit avg / p99 ms | lost/dup | reports |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for parts in (1, 4):
    base = runs.get((parts, "plain"), [])
    base_tp = med([s["produce"]["messages_per_sec"] for _, s in base])
    base_p99 = med([s["produce_latency"]["p99_ms"] for _, s in base])
    for mode in ("plain", "idempotent", "transactional"):
        rs = runs.get((parts, mode), [])
        if not rs:
            continue
        tps = [s["produce"]["messages_per_sec"] for _, s in rs]
        tp = med(tps)
        p99 = med([s["produce_latency"]["p99_ms"] for _, s in rs])
        e2e = med([(s.get("e2e_latency") or {}).get("p99_ms") for _, s in rs])
        commit = "–"
        if mode == "transactional":
            ca = med([s["transactions"]["commit_latency"]["avg_ms"] for _, s in rs])
            cp = med([s["transactions"]["commit_latency"]["p99_ms"] for _, s in rs])
            commit = f"{ca:.2f} / {cp:.2f}"
        lost = sum((s.get("verification") or {}).get("lost", 0) for _, s in rs)
        dup = sum((s.get("verification") or {}).get("duplicated", 0) for _, s in rs)
        links = ", ".join(f"[{i + 1}]({os.path.basename(d)})" for i, (d, _) in enumerate(rs))
        ratio_tp = f"{tp / base_tp:.2f}" if base_tp else "–"
        ratio_p99 = f"{p99 / base_p99:.2f}" if base_p99 else "–"
        e2e = f"{e2e:.2f}" if e2e is not None else "–"
        print(f"| {parts} | {mode} | {len(rs)} | {n(tp)} | {n(min(tps))} – {n(max(tps))} | {ratio_tp} | {p99:.2f} | {ratio_p99} | {e2e} | {commit} | {lost}/{dup} | {links} |")
EOF
