#!/usr/bin/env bash
# Scaling curves (issue 18), all in one invocation:
#
#  1. throughput and p99 send-to-ack against partitions, producer connections and message size,
#     each curve varying one parameter from the base point (1 partition, 1 producer connection,
#     100 B, acks=all, loadgen defaults otherwise), with loadgen's embedded broker (one shard,
#     real fdatasync, data under $DATA), mode e2e (every message consumed back and verified);
#  2. a standalone sluice-server (--cores 1, HTTP listener off): cold start time and RSS with an
#     empty data dir and with a 4,096-partition topic; restart time after SIGKILL with 1 and
#     10 GiB (LOG_GIB) of 1 KiB messages in one partition: from the restart to the port
#     accepting connections and to the first produce + fetch answered (a 1,000-message loadgen
#     e2e probe, retried until it succeeds).
#
#   bash bench/scripts/run-scaling.sh       # from the repository root, ~5-10 minutes
#   target/release/loadgen plot-scaling results/DATE-scaling.csv results/DATE-scaling-restart.csv \
#       --output results/DATE-scaling      # the plots (the script runs this at the end)
#
# Writes $OUT/$NAME.txt (every raw line: loadavg before each curve, loadgen's summaries, CPU
# of each run from /usr/bin/time, server log lines), $OUT/$NAME.csv (the curves) and
# $OUT/$NAME-restart.csv (restart, cold start, RSS), then the SVG plots $OUT/$NAME-<curve>.svg.
# loadgen's report directories go to a temporary directory that is removed afterwards (KEEP=1
# keeps it).
#
# Environment: NAME (DATE-scaling), OUT (results), BASE_MESSAGES (5000000: the 100 B points),
# SIZE_BYTES (500000000: value bytes per message-size point, messages = SIZE_BYTES / size),
# PARTITIONS ("1 16 256 4096"), PRODUCERS ("1 8 64 512"), SIZES ("24 100 1024 10240 102400
# 1048576"; loadgen needs >= 24 B, so 24 stands for 10 B), LOG_GIB ("1 10"; add 50 if the disk
# has ~60 GB free), RSS_PARTITIONS (4096: the many-partition topic), PORT (23817, the standalone server), DATA (/var/tmp: a real disk), EXTRA
# (more loadgen flags for the curves), BUILD (1: cargo build first), SKIP_CURVES / SKIP_RESTART.
set -euo pipefail
cd "$(dirname "$0")/../.."

DATE=$(date -u +%F)
NAME=${NAME:-$DATE-scaling}
OUT=${OUT:-results}
BASE_MESSAGES=${BASE_MESSAGES:-5000000}
SIZE_BYTES=${SIZE_BYTES:-500000000}
PARTITIONS=${PARTITIONS:-"1 16 256 4096"}
PRODUCERS=${PRODUCERS:-"1 8 64 512"}
SIZES=${SIZES:-"24 100 1024 10240 102400 1048576"}
LOG_GIB=${LOG_GIB:-"1 10"}
RSS_PARTITIONS=${RSS_PARTITIONS:-4096}
PORT=${PORT:-23817}
DATA=${DATA:-/var/tmp}
EXTRA=${EXTRA:-}
BUILD=${BUILD:-1}
KEEP=${KEEP:-0}
SKIP_CURVES=${SKIP_CURVES:-0}
SKIP_RESTART=${SKIP_RESTART:-0}

LOADGEN=target/release/loadgen
SERVER=target/release/sluice-server
TXT=$OUT/$NAME.txt
CSV=$OUT/$NAME.csv
RCSV=$OUT/$NAME-restart.csv

if [ "$BUILD" = 1 ]; then
    nice -n 5 cargo build --release -p sluice-bench --bin loadgen -p sluice-server \
        --bin sluice-server -p sluice-tools
fi
mkdir -p "$OUT"
REPORTS=$(mktemp -d "$DATA/scaling-reports-XXXXXX")
SRVLOG=$(mktemp /tmp/scaling-server-XXXXXX.log)
SRV_PID=
SRV_DIR=
cleanup() {
    if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then
        kill -KILL "$SRV_PID" 2>/dev/null || true
        wait "$SRV_PID" 2>/dev/null || true
    fi
    [ -n "$SRV_DIR" ] && rm -rf "$SRV_DIR"
    [ "$KEEP" = 1 ] || rm -rf "$REPORTS"
    rm -f "$SRVLOG"
}
trap cleanup EXIT

say() { echo "$*" | tee -a "$TXT"; }
now_ns() { date +%s%N; }
ms_since() { echo $(( ($(now_ns) - $1) / 1000000 )); }
loadavg() { say "loadavg ($1): $(cat /proc/loadavg)"; }

: >"$TXT"
say "# run-scaling.sh $(date -u +%FT%TZ), commit $(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- . || echo ' (+ uncommitted changes)')"
say "# machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r); data on $DATA ($(df -h --output=source,avail "$DATA" | tail -1 | tr -s ' '))"
say "# settings: BASE_MESSAGES=$BASE_MESSAGES SIZE_BYTES=$SIZE_BYTES EXTRA='$EXTRA' LOG_GIB='$LOG_GIB'"

# ---------------------------------------------------------------- 1. curves (embedded broker)

echo "curve,x,messages,message_size,partitions,producers,acks,msg_per_sec,mb_per_sec,p50_ms,p99_ms,p999_ms,max_ms,e2e_p99_ms,lost,duplicated,ok,cpu_pct,wall_s,load1,settings" >"$CSV"

# point CURVE X SETTINGS LOADGEN-ARGS...: one loadgen run, its lines in $TXT, its row in $CSV
point() {
    local curve=$1 x=$2 settings=$3
    shift 3
    local log dir rc
    log=$(mktemp)
    say "## $curve=$x: loadgen $* $EXTRA"
    set +e
    /usr/bin/time -o "$log.time" -f 'cpu: %e s wall, %U s user, %S s sys, %P of one CPU, max RSS %M KiB' \
        "$LOADGEN" --output "$REPORTS" --label "scaling-$curve-$x" "$@" $EXTRA >"$log" 2>&1
    rc=$?
    set -e
    grep -v '^\s*$' "$log" | tee -a "$TXT"
    tee -a "$TXT" <"$log.time"
    [ "$rc" = 0 ] || say "loadgen exit status $rc"
    dir=$(sed -n 's/^reports written to //p' "$log")
    python3 - "$dir" "$curve" "$x" "$settings" "$log.time" >>"$CSV" <<'EOF'
import json, os, re, sys
d, curve, x, settings, tfile = sys.argv[1:6]
t = open(tfile).read()
m = re.search(r'([\d.]+) s wall.*?(\d+)% of one CPU', t)
wall, cpu = (m.group(1), m.group(2)) if m else ("", "")
if not d or not os.path.exists(os.path.join(d, "summary.json")):
    print(f"{curve},{x},,,,,,,,,,,,,,,false,{cpu},{wall},,{settings}")
    sys.exit()
s = json.load(open(os.path.join(d, "summary.json")))
c, p, pl, e = s["config"], s["produce"], s["produce_latency"], s.get("e2e_latency") or {}
v = s.get("verification") or {}
f = lambda n, k=3: "" if n is None else f"{n:.{k}f}"
print(",".join(str(a) for a in [
    curve, x, c["messages"], c["message_size"], c["partitions"], c["producers"],
    "all" if c["acks"] == -1 else c["acks"], f(p["messages_per_sec"], 0), f(p["mb_per_sec"], 2),
    f(pl.get("p50_ms")), f(pl.get("p99_ms")), f(pl.get("p999_ms")), f(pl.get("max_ms")),
    f(e.get("p99_ms")), v.get("lost", ""), v.get("duplicated", ""), str(s["ok"]).lower(), cpu,
    wall, s["machine"]["load_average_at_start"].split()[0], settings]))
EOF
    rm -f "$log" "$log.time"
}

if [ "$SKIP_CURVES" != 1 ]; then
    loadavg "before the partitions curve"
    for p in $PARTITIONS; do
        point partitions "$p" "1 producer; 100 B; acks=all; $BASE_MESSAGES messages" \
            --partitions "$p" --messages "$BASE_MESSAGES"
    done
    loadavg "before the producers curve"
    for n in $PRODUCERS; do
        point producers "$n" "1 partition; 100 B; acks=all; $BASE_MESSAGES messages" \
            --producers "$n" --messages "$BASE_MESSAGES"
    done
    loadavg "before the message size curve"
    for s in $SIZES; do
        # one 1 MiB record makes a batch above the default message.max.bytes (1048588)
        point message_size "$s" "1 partition; 1 producer; acks=all; $((SIZE_BYTES / 1000000)) MB per point" \
            --message-size "$s" --messages $((SIZE_BYTES / s)) \
            --broker-config message.max.bytes=2097152
    done
    loadavg "after the curves"
fi

# ---------------------------------------------------------------- 2. standalone server

echo "curve,x,shutdown,partitions,data_bytes,active_segment_bytes,accept_ms,serve_ms,probe_ms,rss_kib,settings" >"$RCSV"
rrow() { echo "$*" >>"$RCSV"; }

# srv_start DIR: starts sluice-server on DIR in the background (SRV_PID, T0)
srv_start() {
    # a SIGKILLed server's listening socket can outlive the process for a moment (io_uring
    # tears its requests down asynchronously): wait up to 10 s for the port to be free
    local i
    for i in $(seq 1000); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || break
        if [ "$i" = 1000 ]; then
            say "port $PORT is in use by something else: set PORT"
            exit 1
        fi
        sleep 0.01
    done
    [ "$i" = 1 ] || say "(port $PORT was still accepting for $((i * 10)) ms after the stop)"
    : >"$SRVLOG"
    T0=$(now_ns)
    "$SERVER" --listen "127.0.0.1:$PORT" --data-dir "$1" --cores 1 \
        --override sluice.http.listen= >>"$SRVLOG" 2>&1 &
    SRV_PID=$!
}
# wait_accept: ms from T0 to the port accepting a TCP connection
wait_accept() {
    local deadline=$(($(date +%s) + 300))
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
        if ! kill -0 "$SRV_PID" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
            say "server did not start:"
            tail -20 "$SRVLOG" | tee -a "$TXT"
            exit 1
        fi
        sleep 0.001
    done
    ms_since "$T0"
}
probe() { # probe TOPIC: a 1,000-message produce + consume + verify against the server
    "$LOADGEN" -b "127.0.0.1:$PORT" --topic "$1" --messages 1000 --linger-ms 0 \
        --consume-timeout 10 --no-report >/tmp/scaling-probe.$$ 2>&1
}
# wait_serve TOPIC: ms from T0 to the end of the first probe that succeeds
wait_serve() {
    local deadline=$(($(date +%s) + 300)) tries=0
    until probe "$1"; do
        tries=$((tries + 1))
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "no probe succeeded in 300 s:"
            tee -a "$TXT" </tmp/scaling-probe.$$
            exit 1
        fi
        sleep 0.005
    done
    local ms
    ms=$(ms_since "$T0")
    echo "$ms"
    [ "$tries" = 0 ] || echo "probe: $tries failed attempt(s) before" >>"$TXT"
}
probe_ms() { # a probe against the warm server, for reference
    local t
    t=$(now_ns)
    probe "$1" || say "warm probe failed"
    ms_since "$t"
}
rss() { awk '/^VmRSS/{print $2}' "/proc/$SRV_PID/status"; }
srv_stop() { # srv_stop KILL|TERM: sends the signal, reaps the server, says how long it took
    local t
    t=$(now_ns)
    kill "-$1" "$SRV_PID"
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=
    say "stopped (SIG$1) after $(ms_since "$t") ms"
}
srv_log() { # the server's own lines about startup and recovery (at most 12)
    grep -aiE 'recover|listen|error|warn|open|segment' "$SRVLOG" | head -12 | sed 's/^/  server: /' >>"$TXT" || true
}
data_bytes() { du -sb "$SRV_DIR" | cut -f1; }
active_segment() { # size of the newest .log of partition DIR/TOPIC-0
    # shellcheck disable=SC2012
    ls -1 "$SRV_DIR"/loadgen-0/*.log 2>/dev/null | sort | tail -1 | xargs -r stat -c %s
}

if [ "$SKIP_RESTART" != 1 ]; then
    loadavg "before cold start and RSS"
    # cold start, empty data dir; serve = the probe, which also creates its 1-partition topic
    SRV_DIR=$(mktemp -d "$DATA/scaling-empty-XXXXXX")
    srv_start "$SRV_DIR"
    acc=$(wait_accept)
    srv=$(wait_serve probe)
    pms=$(probe_ms probe)
    say "cold start, empty data dir: accepting after $acc ms, first produce + fetch answered after $srv ms (warm probe $pms ms, includes creating topic 'probe' on the first try)"
    srv_log
    rrow "cold_start,0,none,0,$(data_bytes),,$acc,$srv,$pms,,empty data dir; probe creates a 1-partition topic"
    srv_stop TERM
    rm -rf "$SRV_DIR"

    # idle RSS, then $RSS_PARTITIONS partitions
    SRV_DIR=$(mktemp -d "$DATA/scaling-p$RSS_PARTITIONS-XXXXXX")
    srv_start "$SRV_DIR"
    acc=$(wait_accept)
    sleep 2
    r=$(rss)
    say "fresh start, no topics: accepting after $acc ms; idle VmRSS after 2 s: $r KiB"
    rrow "rss_idle,0,none,0,$(data_bytes),,$acc,,,$r,fresh start; no topics; 2 s idle"
    # loadgen creates the topic (and waits out a CreateTopics timeout), then writes 1 message
    t=$(now_ns)
    "$LOADGEN" -b "127.0.0.1:$PORT" --topic scale --partitions "$RSS_PARTITIONS" --messages 1 --mode produce \
        --no-report 2>&1 | grep -v '^\s*$' | tee -a "$TXT"
    say "created topic 'scale' with $RSS_PARTITIONS partitions (and wrote 1 message) in $(ms_since "$t") ms"
    sleep 2
    r=$(rss)
    say "$RSS_PARTITIONS partitions created, idle 2 s: VmRSS $r KiB"
    rrow "rss_${RSS_PARTITIONS}_created,$RSS_PARTITIONS,none,$RSS_PARTITIONS,$(data_bytes),,,,,$r,after creating $RSS_PARTITIONS partitions; 2 s idle"
    say "## writing 100 keyed messages of 100 B to each partition (murmur2 spreads them)"
    "$LOADGEN" -b "127.0.0.1:$PORT" --topic scale --keys --messages $((RSS_PARTITIONS * 100)) --acks all \
        --no-report 2>&1 | grep -v '^\s*$' | tee -a "$TXT"
    sleep 2
    r=$(rss)
    say "$RSS_PARTITIONS partitions written, idle 2 s: VmRSS $r KiB"
    rrow "rss_${RSS_PARTITIONS}_written,$RSS_PARTITIONS,none,$RSS_PARTITIONS,$(data_bytes),,,,,$r,after e2e of $((RSS_PARTITIONS * 100)) keyed 100 B messages over $RSS_PARTITIONS partitions; 2 s idle"
    pms=$(probe_ms scale)
    say "warm probe on 'scale': $pms ms"
    for how in TERM KILL; do
        srv_stop "$how"
        srv_start "$SRV_DIR"
        acc=$(wait_accept)
        srv=$(wait_serve scale)
        sleep 2
        r=$(rss)
        pms=$(probe_ms scale)
        say "restart after SIG$how with $RSS_PARTITIONS partitions: accepting after $acc ms, first produce + fetch answered after $srv ms (warm probe $pms ms); VmRSS 2 s later $r KiB"
        srv_log
        rrow "cold_start_${RSS_PARTITIONS}_$(echo "$how" | tr 'A-Z' 'a-z'),$RSS_PARTITIONS,$how,$RSS_PARTITIONS,$(data_bytes),,$acc,$srv,$pms,$r,$RSS_PARTITIONS partitions with 100 messages each"
    done
    srv_stop TERM
    rm -rf "$SRV_DIR"

    # restart after SIGKILL against the data in the log
    SRV_DIR=$(mktemp -d "$DATA/scaling-log-XXXXXX")
    have=0
    last=
    for g in $LOG_GIB; do
        loadavg "before filling to $g GiB"
        srv_start "$SRV_DIR"
        wait_accept >/dev/null
        n=$(((g - have) * 1048576))
        say "## filling to $g GiB: $n more messages of 1 KiB into topic loadgen (1 partition), acks=1, produce only"
        t=$(now_ns)
        "$LOADGEN" -b "127.0.0.1:$PORT" --topic loadgen --partitions 1 --message-size 1024 \
            --messages "$n" --acks 1 --mode produce --no-report 2>&1 | grep -v '^\s*$' | tee -a "$TXT"
        say "filled in $(ms_since "$t") ms"
        have=$g
        bytes=$(data_bytes)
        act=$(active_segment)
        say "data dir: $bytes bytes, active segment $act bytes"
        srv_stop KILL
        srv_start "$SRV_DIR"
        acc=$(wait_accept)
        srv=$(wait_serve loadgen)
        pms=$(probe_ms loadgen)
        say "restart after SIGKILL with $g GiB: accepting after $acc ms, first produce + fetch answered after $srv ms (warm probe $pms ms)"
        srv_log
        rrow "log_size,$g,KILL,1,$bytes,$act,$acc,$srv,$pms,$(rss),1 partition; 1 KiB messages; 1 GiB segments"
        srv_stop TERM
        last=$g
    done
    if [ -n "$last" ]; then
        # the worst case for a SIGKILL: an active segment nearly full (log.segment.bytes 1 GiB),
        # all of it after the recovery point
        srv_start "$SRV_DIR"
        wait_accept >/dev/null
        act=$(active_segment)
        per=$(( $(data_bytes) / (have * 1048576) ))
        n=$(( (1043333120 - act) / per ))
        if [ "$n" -gt 0 ]; then
            say "## filling the active segment from $act to ~995 MiB: $n more messages of 1 KiB"
            "$LOADGEN" -b "127.0.0.1:$PORT" --topic loadgen --partitions 1 --message-size 1024 \
                --messages "$n" --acks 1 --mode produce --no-report 2>&1 | grep -v '^\s*$' | tee -a "$TXT"
        fi
        bytes=$(data_bytes)
        act=$(active_segment)
        say "data dir: $bytes bytes, active segment $act bytes"
        srv_stop KILL
        srv_start "$SRV_DIR"
        acc=$(wait_accept)
        srv=$(wait_serve loadgen)
        pms=$(probe_ms loadgen)
        gib=$(python3 -c "print(round($bytes / 2**30, 2))")
        say "restart after SIGKILL with $gib GiB and a full active segment: accepting after $acc ms, first produce + fetch answered after $srv ms (warm probe $pms ms)"
        srv_log
        rrow "log_size_full_active,$gib,KILL,1,$bytes,$act,$acc,$srv,$pms,$(rss),1 partition; 1 KiB messages; active segment ~1 GiB"
        srv_stop TERM
        # the same data after a clean shutdown, for comparison
        srv_start "$SRV_DIR"
        acc=$(wait_accept)
        srv=$(wait_serve loadgen)
        pms=$(probe_ms loadgen)
        say "restart after SIGTERM with $last GiB: accepting after $acc ms, first produce + fetch answered after $srv ms (warm probe $pms ms)"
        srv_log
        rrow "log_size_clean,$last,TERM,1,$(data_bytes),$(active_segment),$acc,$srv,$pms,$(rss),1 partition; 1 KiB messages; 1 GiB segments"
        srv_stop TERM
    fi
    rm -rf "$SRV_DIR"
    SRV_DIR=
    loadavg "at the end"
fi
rm -f /tmp/scaling-probe.$$

say "# plots"
"$LOADGEN" plot-scaling "$CSV" "$RCSV" --output "$OUT/$NAME" | tee -a "$TXT"
