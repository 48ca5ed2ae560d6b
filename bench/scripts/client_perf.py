#!/usr/bin/env python3
"""Standard clients against sluice (issue 18): confluent-kafka (librdkafka) and kafka-python
produce and consume 100 B messages against one release sluice-server, 1 and 4 partitions,
acks=1 and acks=all, with the CPU of the client process and of the broker process measured over
the same window, so the run shows which of the two is the bottleneck.

Starts target/release/sluice-server on 127.0.0.1 (a free port below 32768, data under /var/tmp,
HTTP console off). For each client, partition count and acks it creates a fresh topic, then runs
the produce phase and the consume phase each in its own subprocess (this script with `child`):
the producer sends N messages whose first 8 bytes are their sequence number and waits for every
delivery report; the consumer (a fresh group, auto.offset.reset=earliest) reads them back and
checks that every sequence number arrives exactly once. The child reads utime+stime from
/proc/self/stat, /proc/self/task/*/stat (its busiest thread) and /proc/<broker>/stat when its
measured window opens and closes; the parent also takes the child's whole-life CPU from wait4.
With --loadgen it also runs loadgen against the same broker (its CPU from wait4, the broker's
from /proc over the same run). Prints one line per case and writes a JSON report.

    .venv/bin/python bench/scripts/client_perf.py [--server target/release/sluice-server]
        [--loadgen target/release/loadgen] [--out report.json]
        [--confluent-messages 1000000] [--kafka-python-messages 200000]

CPU % is of one core (100 % = one core busy for the whole window; the broker has one shard per
core by default, so it can reach 100 x shards %). /proc counts CPU in clock ticks (10 ms here) and
schedstat in ns, so windows shorter than a second (small --*-messages) give rough percentages.
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL_RECORDS = 10000  # messages asked for per consume()/poll() call
MIB = 1 << 20


# ---------------------------------------------------------------------------- /proc

def proc_cpu(pid):
    """utime+stime of a process (all its threads, live and exited), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpus(pid):
    """{tid: (name, cpu seconds, runqueue wait seconds)} of a process's live threads: utime+stime
    from stat, and the time spent runnable but waiting for a CPU from schedstat."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                wait = int(f.read().split()[1]) / 1e9
        except (OSError, IndexError):
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK, wait)
    return out


def thread_deltas(before, after, wall):
    threads = []
    for tid, (name, cpu, wait) in after.items():
        _, cpu0, wait0 = before.get(tid, (name, 0.0, 0.0))
        threads.append({"tid": int(tid), "name": name, "cpu_s": round(cpu - cpu0, 3),
                        "cpu_pct": round(100 * (cpu - cpu0) / wall, 1),
                        "runqueue_wait_pct": round(100 * (wait - wait0) / wall, 1)})
    threads.sort(key=lambda t: -t["cpu_s"])
    return threads


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Window:
    """CPU of this process, its threads and the broker (and its threads) between open() and
    close()."""

    def __init__(self, broker_pid):
        self.broker_pid = broker_pid

    def open(self):
        self.broker_threads0 = thread_cpus(self.broker_pid)
        self.broker0 = proc_cpu(self.broker_pid)
        self.threads0 = thread_cpus("self")
        self.self0 = proc_cpu("self")
        self.t0 = time.monotonic()

    def close(self):
        wall = time.monotonic() - self.t0
        self1 = proc_cpu("self")
        threads1 = thread_cpus("self")
        broker1 = proc_cpu(self.broker_pid)
        broker_threads1 = thread_cpus(self.broker_pid)
        threads = thread_deltas(self.threads0, threads1, wall)
        bthreads = thread_deltas(self.broker_threads0, broker_threads1, wall)
        client = self1 - self.self0
        broker = broker1 - self.broker0
        top = threads[0] if threads else {}
        btop = bthreads[0] if bthreads else {}
        return {
            "wall_s": round(wall, 4),
            "client_cpu_s": round(client, 3),
            "client_cpu_pct": round(100 * client / wall, 1),
            "client_busiest_thread": top.get("name"),
            "client_busiest_thread_pct": top.get("cpu_pct"),
            # on a CPU or waiting for one: 100 % means the thread never waited for anything else
            "client_busiest_thread_runnable_pct": round(
                top.get("cpu_pct", 0) + top.get("runqueue_wait_pct", 0), 1),
            "client_threads": threads[:6],
            "broker_cpu_s": round(broker, 3),
            "broker_cpu_pct": round(100 * broker / wall, 1),
            "broker_busiest_thread": btop.get("name"),
            "broker_busiest_thread_pct": btop.get("cpu_pct"),
            "broker_threads": bthreads[:6],
        }


# ---------------------------------------------------------------------------- client settings

def confluent_producer_conf(bootstrap, acks):
    return {
        "bootstrap.servers": bootstrap,
        "acks": acks,
        # librdkafka's defaults since 1.5/1.7, stated so the run records them
        "linger.ms": 5,
        "batch.size": 1000000,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 100000,
        "compression.type": "none",
        # plain producer for both acks settings (librdkafka's default; loadgen's default too)
        "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 5,
    }


def confluent_consumer_conf(bootstrap, group):
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        # librdkafka defaults, stated
        "fetch.max.bytes": 52428800,
        "max.partition.fetch.bytes": 1048576,
        "fetch.wait.max.ms": 500,
        "queued.max.messages.kbytes": 65536,
        "queued.min.messages": 100000,
        # librdkafka's default is 1000: once queued.min.messages are waiting in the client, the
        # partition's next fetch is put off for a whole second, and 1 M messages take seconds of
        # idle client and broker (results/2026-12-06-client-perf-fetch-backoff-default.txt);
        # 0 fetches again at once
        "fetch.queue.backoff.ms": 0,
    }


def kafka_python_producer_conf(bootstrap, acks):
    return {
        "bootstrap_servers": bootstrap,
        "acks": {"1": 1, "all": "all"}.get(acks, acks),
        "linger_ms": 5,
        "batch_size": 1000000,  # kafka-python's default is 16384; librdkafka's 1000000
        "max_request_size": 1048576,
        "max_in_flight_requests_per_connection": 5,
        "compression_type": None,
        # kafka-python 3.0 defaults to True; plain, as for confluent-kafka
        "enable_idempotence": False,
        # kafka-python keeps client-side metrics by default; off for throughput
        "metrics_enabled": False,
    }


def kafka_python_consumer_conf(bootstrap, group):
    return {
        "bootstrap_servers": bootstrap,
        "group_id": group,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": True,
        "fetch_max_bytes": 52428800,
        "max_partition_fetch_bytes": 1048576,
        "fetch_max_wait_ms": 500,
        "max_poll_records": POLL_RECORDS,
        "check_crcs": True,
        "metrics_enabled": False,
    }


def settings_for(client, bootstrap="BOOTSTRAP", acks="1|all", group="GROUP"):
    if client == "confluent-kafka":
        return {"producer": confluent_producer_conf(bootstrap, acks),
                "consumer": confluent_consumer_conf(bootstrap, group),
                "consumer_call": f"Consumer.consume(num_messages={POLL_RECORDS}, timeout=1.0)",
                "producer_call": "Producer.produce(topic, value) with a global on_delivery "
                                 "callback counting successes and errors, poll(0) every 1000 "
                                 "messages, poll(0.001) and retry on BufferError, flush()"}
    return {"producer": kafka_python_producer_conf(bootstrap, acks),
            "consumer": kafka_python_consumer_conf(bootstrap, group),
            "consumer_call": f"KafkaConsumer.poll(timeout_ms=1000, max_records={POLL_RECORDS})",
            "producer_call": "KafkaProducer.send(topic, value) keeping every future, flush(), "
                             "then every future checked for success"}


# ---------------------------------------------------------------------------- child: one phase

def value_of(seq, size, pad):
    return seq.to_bytes(8, "big") + pad


def child_produce(args):
    win = Window(args.broker_pid)
    n, size = args.messages, args.size
    pad = bytes(random.getrandbits(8) for _ in range(size - 8))
    result = {"messages": n}
    if args.client == "confluent-kafka":
        from confluent_kafka import Producer

        counts = [0, 0]  # ok, errors
        first_error = []

        def on_delivery(err, msg):
            if err is None:
                counts[0] += 1
            else:
                counts[1] += 1
                if not first_error:
                    first_error.append(str(err))

        conf = confluent_producer_conf(args.bootstrap, args.acks)
        conf["on_delivery"] = on_delivery
        p = Producer(conf)
        p.list_topics(args.topic, timeout=10)  # connected, metadata known: outside the window
        produce, poll, topic = p.produce, p.poll, args.topic
        win.open()
        for i in range(n):
            v = i.to_bytes(8, "big") + pad
            while True:
                try:
                    produce(topic, v)
                    break
                except BufferError:
                    poll(0.001)
            if i % 1000 == 0:
                poll(0)
        left = p.flush(120)
        result.update(win.close())
        result.update(delivered=counts[0], errors=counts[1] + left, undelivered=left,
                      first_error=first_error[0] if first_error else None)
    else:
        from kafka import KafkaProducer

        p = KafkaProducer(**kafka_python_producer_conf(args.bootstrap, args.acks))
        p.partitions_for(args.topic)  # metadata fetched outside the window
        send, topic = p.send, args.topic
        futures = []
        append = futures.append
        win.open()
        for i in range(n):
            append(send(topic, value=i.to_bytes(8, "big") + pad))
        p.flush(120)
        result.update(win.close())
        ok = errors = 0
        first_error = None
        for f in futures:
            if f.is_done and f.succeeded():
                ok += 1
            else:
                errors += 1
                if first_error is None:
                    first_error = repr(f.exception) if f.is_done else "not done after flush"
        p.close(10)
        result.update(delivered=ok, errors=errors, undelivered=n - ok, first_error=first_error)
    return result


def child_consume(args):
    win = Window(args.broker_pid)
    n = args.messages
    seen = bytearray(n)
    got = dup = bad = 0
    deadline_idle = 30.0
    result = {"messages": n}
    t_start = time.monotonic()
    first_batch = None
    errors = 0
    first_error = None

    def account(values):
        nonlocal got, dup, bad
        for v in values:
            s = int.from_bytes(v[:8], "big")
            if s >= n:
                bad += 1
            elif seen[s]:
                dup += 1
            else:
                seen[s] = 1
                got += 1

    if args.client == "confluent-kafka":
        from confluent_kafka import Consumer

        c = Consumer(confluent_consumer_conf(args.bootstrap, args.group))
        c.subscribe([args.topic])
        consume = c.consume
        last = time.monotonic()
        while got + dup + bad < n:
            msgs = consume(num_messages=POLL_RECORDS, timeout=1.0)
            if not msgs:
                if time.monotonic() - last > deadline_idle:
                    break
                continue
            last = time.monotonic()
            values = []
            for m in msgs:
                if m.error():
                    errors += 1
                    if first_error is None:
                        first_error = str(m.error())
                else:
                    values.append(m.value())
            if first_batch is None:
                # the window opens when the first batch is in (group joined, fetching): that
                # batch is left out of the rate
                first_batch = len(values)
                join_s = time.monotonic() - t_start
                account(values)
                win.open()
                continue
            account(values)
        result.update(win.close() if first_batch is not None else {})
        c.close()
    else:
        from kafka import KafkaConsumer

        c = KafkaConsumer(args.topic, **kafka_python_consumer_conf(args.bootstrap, args.group))
        poll = c.poll
        last = time.monotonic()
        while got + dup + bad < n:
            batches = poll(timeout_ms=1000, max_records=POLL_RECORDS)
            if not batches:
                if time.monotonic() - last > deadline_idle:
                    break
                continue
            last = time.monotonic()
            values = [r.value for recs in batches.values() for r in recs]
            if first_batch is None:
                first_batch = len(values)
                join_s = time.monotonic() - t_start
                account(values)
                win.open()
                continue
            account(values)
        result.update(win.close() if first_batch is not None else {})
        c.close()
    missing = n - got
    result.update(
        consumed=got, duplicates=dup, out_of_range=bad, missing=missing, errors=errors,
        first_error=first_error, first_batch=first_batch,
        time_to_first_batch_s=round(join_s, 3) if first_batch is not None else None,
        window_messages=(got + dup + bad) - (first_batch or 0),
    )
    return result


def child_main(argv):
    ap = argparse.ArgumentParser(prog="client_perf.py child")
    ap.add_argument("--client", required=True, choices=["confluent-kafka", "kafka-python"])
    ap.add_argument("--phase", required=True, choices=["produce", "consume"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", default="g")
    ap.add_argument("--messages", type=int, required=True)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--acks", default="all")
    ap.add_argument("--broker-pid", type=int, required=True)
    args = ap.parse_args(argv)
    r = child_produce(args) if args.phase == "produce" else child_consume(args)
    print("RESULT " + json.dumps(r), flush=True)


# ---------------------------------------------------------------------------- parent

def free_port():
    """A free TCP port on 127.0.0.1 below 32768 (the ephemeral range starts there)."""
    for _ in range(200):
        port = random.randint(20000, 32767)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise SystemExit("no free port below 32768")


def start_broker(server, cores, data_root):
    port = free_port()
    data = os.path.join(data_root, "data")
    log = open(os.path.join(data_root, "server.log"), "w+")
    cmd = [server, "--listen", f"127.0.0.1:{port}", "--data-dir", data,
           "--override", "sluice.http.listen="]
    if cores:
        cmd += ["--cores", str(cores)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")})
    deadline = time.time() + 30
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"sluice-server exited with {proc.returncode}:\n{log.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.time() > deadline:
                raise SystemExit("sluice-server did not listen within 30 s")
            time.sleep(0.05)
    return proc, port, cmd, log


def create_topic(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    deadline = time.time() + 10
    while time.time() < deadline:
        md = admin.list_topics(topic, timeout=5).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == partitions and all(
                p.leader >= 0 for p in md.partitions.values()):
            return
        time.sleep(0.05)
    raise SystemExit(f"topic {topic} has no leaders after 10 s")


def run_child(python, script, child_args):
    # output to files, not pipes: wait4 below does not read, so a chatty child must not block
    with tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        proc = subprocess.Popen([python, script, "child"] + child_args, stdout=fout, stderr=ferr)
        # wait4 gives the child's whole-life CPU (import, connect, the phase, close)
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        fout.seek(0)
        ferr.seek(0)
        out = fout.read().decode(errors="replace")
        err = ferr.read().decode(errors="replace")
    m = re.search(r"^RESULT (.*)$", out, re.M)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"child {child_args} failed ({proc.returncode}):\n{out}\n{err}")
    r = json.loads(m.group(1))
    r["client_process_cpu_s_whole_life"] = round(ru.ru_utime + ru.ru_stime, 3)
    r["client_process_max_rss_mib"] = round(ru.ru_maxrss / 1024, 1)
    return r


def run_loadgen(loadgen, bootstrap, broker_pid, messages, acks, partitions, topic, extra):
    cmd = [loadgen, "-b", bootstrap, "--messages", str(messages), "--acks", acks,
           "--partitions", str(partitions), "--topic", topic, "--no-report"] + extra
    b0 = proc_cpu(broker_pid)
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as fout:
        proc = subprocess.Popen(cmd, stdout=fout, stderr=subprocess.STDOUT,
                                env={**os.environ, "RUST_LOG": "warn"})
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        b1 = proc_cpu(broker_pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        fout.seek(0)
        out = fout.read().decode(errors="replace")
    sent = re.search(r"(\d+) records sent, ([\d.]+) records/sec", out)
    consumed = re.search(r"(\d+) records consumed, ([\d.]+) records/sec", out)
    verified = re.search(r"^.*\b(lost|verified)\b.*$", out, re.M)
    cpu = ru.ru_utime + ru.ru_stime
    return {
        "command": " ".join(cmd), "exit": proc.returncode, "output": out.strip().splitlines(),
        "produce_msg_s": float(sent.group(2)) if sent else None,
        "consume_msg_s": float(consumed.group(2)) if consumed else None,
        "verification": verified.group(0).strip() if verified else None,
        "wall_s": round(wall, 3),
        "loadgen_cpu_s": round(cpu, 3), "loadgen_cpu_pct": round(100 * cpu / wall, 1),
        "broker_cpu_s": round(b1 - b0, 3), "broker_cpu_pct": round(100 * (b1 - b0) / wall, 1),
    }


def fmt_line(c):
    r = c
    msgs = r.get("window_messages", r["messages"])
    rate = msgs / r["wall_s"] if r.get("wall_s") else 0
    c["msg_s"] = round(rate, 1)
    c["mib_s"] = round(rate * c["size"] / MIB, 2)
    ok = c["errors"] == 0 and (c["phase"] == "produce" and c["delivered"] == c["messages"]
                               or c["phase"] == "consume" and c["missing"] == 0
                               and c["duplicates"] == 0 and c["out_of_range"] == 0)
    c["ok"] = ok
    if c["phase"] == "produce":
        check = f"delivered {c['delivered']}/{c['messages']}"
    else:
        check = (f"seq seen once {c['consumed']}/{c['messages']}, dup {c['duplicates']}, "
                 f"join {c['time_to_first_batch_s']} s")
    return (f"{c['client']:<15} {c['phase']:<7} p={c['partitions']} acks={c['acks']:<3} "
            f"{msgs:>8} msgs {rate:>10.0f} msg/s {c['mib_s']:>7.2f} MB/s  "
            f"client CPU {c['client_cpu_pct']:>5.1f} % (busiest thread {c['client_busiest_thread']} "
            f"{c['client_busiest_thread_pct']:.1f} %, runnable {c['client_busiest_thread_runnable_pct']:.0f} %)"
            f"  broker CPU {c['broker_cpu_pct']:>5.1f} % (busiest thread "
            f"{c['broker_busiest_thread_pct']:.1f} %)  "
            f"errors {c['errors']}  {check}{'' if ok else '  FAILED'}")


def git_commit(repo):
    try:
        return subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return None


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        return child_main(sys.argv[2:])
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default=os.environ.get(
        "SLUICE_SERVER_BIN", os.path.join(repo, "target/release/sluice-server")))
    ap.add_argument("--cores", type=int, default=None,
                    help="broker shards (default: the server's, one per core)")
    ap.add_argument("--loadgen", default=None, help="also run this loadgen against the broker")
    ap.add_argument("--loadgen-messages", type=int, default=1000000)
    ap.add_argument("--clients", default="confluent-kafka,kafka-python")
    ap.add_argument("--partitions", default="1,4")
    ap.add_argument("--acks", default="1,all")
    ap.add_argument("--confluent-messages", type=int, default=1000000)
    ap.add_argument("--kafka-python-messages", type=int, default=200000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--python", default=sys.executable, help="interpreter of the client processes")
    ap.add_argument("--data-parent", default="/var/tmp",
                    help="parent of the broker's temporary data dir (a real disk, not tmpfs)")
    ap.add_argument("--out", default=None, help="JSON report")
    args = ap.parse_args()
    if args.size < 8:
        raise SystemExit("--size must be at least 8 (the sequence number)")

    import confluent_kafka
    import kafka

    script = os.path.abspath(__file__)
    data_root = tempfile.mkdtemp(prefix="sluice-client-perf-", dir=args.data_parent)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "commit": git_commit(repo),
        "machine": {"vcpus": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version()},
        "load_average_start": loadavg(),
        "versions": {"confluent-kafka": confluent_kafka.version(),
                     "librdkafka": confluent_kafka.libversion()[0],
                     "kafka-python": kafka.__version__},
        "message_size": args.size,
        "settings": {c: settings_for(c) for c in args.clients.split(",")},
        "cases": [], "loadgen": [],
    }
    broker, port, cmd, log = start_broker(args.server, args.cores, data_root)
    bootstrap = f"127.0.0.1:{port}"
    report["broker_command"] = " ".join(cmd)
    report["broker_pid"] = broker.pid
    report["broker_cpu_s_at_start"] = proc_cpu(broker.pid)
    print(f"# {report['date']}, commit {report['commit']}, {os.cpu_count()} vCPUs, kernel "
          f"{platform.release()}, load average {report['load_average_start']}")
    print(f"# broker: {report['broker_command']} (data dir on {args.data_parent})")
    print(f"# confluent-kafka {report['versions']['confluent-kafka']} (librdkafka "
          f"{report['versions']['librdkafka']}), kafka-python {report['versions']['kafka-python']},"
          f" Python {platform.python_version()}; {args.size} B values, no keys, no compression")
    for c in args.clients.split(","):
        s = settings_for(c)
        shown = {k: v for k, v in s["producer"].items() if "bootstrap" not in k}
        print(f"# {c} producer: {json.dumps(shown)}; {s['producer_call']}")
        shown = {k: v for k, v in s["consumer"].items() if "bootstrap" not in k and "group" not in k}
        print(f"# {c} consumer: fresh group per case, {json.dumps(shown)}; {s['consumer_call']}")
    print("# produce window: first produce() to the last delivery report (flush); consume window: "
          "from the first batch received (after the group join, left out of the count) to the last "
          "message; client CPU = the client process (all threads), busiest thread of it, broker "
          "CPU = sluice-server process, all from /proc over the same window; % of one core; "
          "runnable = the busiest client thread's CPU + its run-queue wait (schedstat): near "
          "100 % it was CPU-bound, waiting for nothing but a CPU")
    failed = False
    try:
        for client in args.clients.split(","):
            n = args.confluent_messages if client == "confluent-kafka" else args.kafka_python_messages
            for partitions in [int(p) for p in args.partitions.split(",")]:
                for acks in args.acks.split(","):
                    tag = f"{client.replace('-', '')}-p{partitions}-acks{acks}-{int(time.time())}"
                    topic = f"perf-{tag}"
                    create_topic(bootstrap, topic, partitions)
                    for phase in ("produce", "consume"):
                        load = loadavg()
                        r = run_child(args.python, script, [
                            "--client", client, "--phase", phase, "--bootstrap", bootstrap,
                            "--topic", topic, "--group", f"g-{tag}", "--messages", str(n),
                            "--size", str(args.size), "--acks", acks,
                            "--broker-pid", str(broker.pid)])
                        case = {"client": client, "phase": phase, "partitions": partitions,
                                "acks": acks, "size": args.size, "topic": topic,
                                "load_average": load, **r}
                        print(fmt_line(case), flush=True)
                        failed |= not case["ok"]
                        report["cases"].append(case)
        if args.loadgen:
            print("# loadgen against the same broker (its own defaults: 256 KiB batches, linger "
                  "5 ms, 5 in flight, 1 producer and 1 consumer connection; e2e = consumer "
                  "alongside the producer, --consume-after = consume once all are acked); "
                  "CPU over the whole loadgen process life (wait4) and the broker over the "
                  "same wall time")
            for partitions in [int(p) for p in args.partitions.split(",")]:
                for acks in args.acks.split(","):
                    for mode, extra in (("e2e", []), ("consume-after", ["--consume-after"])):
                        load = loadavg()
                        topic = f"loadgen-p{partitions}-acks{acks}-{mode}-{int(time.time())}"
                        r = run_loadgen(args.loadgen, bootstrap, broker.pid,
                                        args.loadgen_messages, acks, partitions, topic, extra)
                        r.update(partitions=partitions, acks=acks, mode=mode, load_average=load,
                                 messages=args.loadgen_messages)
                        ok = r["exit"] == 0 and r["verification"] and "0 lost" in r["verification"]
                        r["ok"] = bool(ok)
                        failed |= not ok
                        report["loadgen"].append(r)
                        print(f"loadgen         {mode:<13} p={partitions} acks={acks:<3} "
                              f"{args.loadgen_messages:>8} msgs produce {r['produce_msg_s'] or 0:>10.0f}"
                              f" msg/s, consume {r['consume_msg_s'] or 0:>10.0f} msg/s  loadgen CPU "
                              f"{r['loadgen_cpu_pct']:>5.1f} %  broker CPU {r['broker_cpu_pct']:>5.1f} "
                              f"% over {r['wall_s']:.2f} s  {r['verification']}"
                              f"{'' if ok else '  FAILED'}", flush=True)
    finally:
        report["load_average_end"] = loadavg()
        try:
            report["broker_cpu_s_total"] = proc_cpu(broker.pid)
        except OSError:
            pass
        broker.send_signal(signal.SIGTERM)
        try:
            report["broker_exit"] = broker.wait(120)
        except subprocess.TimeoutExpired:
            broker.kill()
            report["broker_exit"] = f"killed after 120 s ({broker.wait()})"
        log.seek(0)
        report["broker_log_tail"] = log.read()[-4000:].splitlines()
        shutil.rmtree(data_root, ignore_errors=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=1)
                f.write("\n")
    print(f"# broker stopped with SIGTERM: exit {report['broker_exit']}; load average at the "
          f"end {report['load_average_end']}")
    if failed or report["broker_exit"] != 0:
        print("# FAILED: errors, missing or duplicated messages, or an unclean broker stop")
        sys.exit(1)


if __name__ == "__main__":
    main()
