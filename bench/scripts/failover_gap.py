#!/usr/bin/env python3
"""Failover gap: how long acks=all producing stops when a partition's leader is SIGKILLed.

Starts three sluice-server processes (each a metadata quorum voter) on 127.0.0.1, creates a
topic with 1 partition, replication factor 3 and min.insync.replicas=2, and produces with
confluent-kafka (acks=all, idempotent) at a steady rate. After a few seconds it SIGKILLs the
partition's leader and keeps producing. It reports the longest time between two acknowledgements
around the kill (the gap) and then consumes the topic back from the new leader: every
acknowledged message must be there exactly once.

    .venv/bin/python bench/scripts/failover_gap.py [--server target/release/sluice-server]
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metadata(admin, topic=None):
    """list_topics, retried: brokers that just died make librdkafka answer partially."""
    for _ in range(50):
        try:
            return admin.list_topics(topic, timeout=5)
        except Exception:  # KafkaException(_PARTIAL / _TRANSPORT)
            time.sleep(0.2)
    return admin.list_topics(topic, timeout=5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="target/release/sluice-server")
    ap.add_argument("--rate", type=int, default=2000, help="messages per second")
    ap.add_argument("--before", type=float, default=4.0, help="seconds before the kill")
    ap.add_argument("--after", type=float, default=10.0, help="seconds after the kill")
    args = ap.parse_args()

    ids = [1, 2, 3]
    voters = {i: free_port() for i in ids}
    clients = {i: free_port() for i in ids}
    v = ",".join(f"{i}@127.0.0.1:{voters[i]}" for i in ids)
    root = tempfile.mkdtemp(prefix="sluice-failover-", dir="/var/tmp")
    procs = {}
    for i in ids:
        procs[i] = subprocess.Popen(
            [args.server, "--node-id", str(i), "--controller-quorum-voters", v,
             "--listen", f"127.0.0.1:{clients[i]}", "--data-dir", f"{root}/d{i}", "--cores", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"})
    bootstrap = ",".join(f"127.0.0.1:{clients[i]}" for i in ids)
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        deadline = time.time() + 30
        while len(metadata(admin).brokers) < 3:
            if time.time() > deadline:
                raise SystemExit("cluster did not form")
            time.sleep(0.1)
        admin.create_topics([NewTopic("failover", 1, 3, config={"min.insync.replicas": "2"})])[
            "failover"].result(10)
        time.sleep(1)
        leader = metadata(admin, "failover").topics["failover"].partitions[0].leader

        acked = []
        failed = []

        def on_delivery(err, msg):
            if err:
                failed.append(str(err))
            else:
                acked.append((time.monotonic(), int(msg.value())))

        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 1, "message.timeout.ms": 60000})
        start = time.monotonic()
        killed_at = None
        n = 0
        while time.monotonic() - start < args.before + args.after:
            now = time.monotonic()
            if killed_at is None and now - start >= args.before:
                procs[leader].send_signal(signal.SIGKILL)
                killed_at = now
            while n < (now - start) * args.rate:
                p.produce("failover", value=str(n).encode(), on_delivery=on_delivery)
                n += 1
            p.poll(0.001)
        p.flush(60)
        times = sorted(t for t, _ in acked)
        gap = max((b - a for a, b in zip(times, times[1:]) if b >= killed_at), default=None)
        first_after = next((t for t in times if t > killed_at), None)
        new_leader = metadata(admin, "failover").topics["failover"].partitions[0].leader

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "failover-check",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe(["failover"])
        seen = {}
        want = {v for _, v in acked}
        deadline = time.time() + 30
        while time.time() < deadline and not want.issubset(seen.keys()):
            m = c.poll(0.5)
            if m is not None and not m.error():
                k = int(m.value())
                seen[k] = seen.get(k, 0) + 1
        c.close()
        lost = len(want - seen.keys())
        dup = sum(1 for k in want if seen.get(k, 0) > 1)
        print(json.dumps({
            "sent": n, "acknowledged": len(acked), "failed": len(failed),
            "killed_leader": leader, "new_leader": new_leader,
            "gap_ms": None if gap is None else round(gap * 1000),
            "first_ack_after_kill_ms": None if first_after is None else round((first_after - killed_at) * 1000),
            "acknowledged_lost": lost, "acknowledged_duplicated": dup,
        }))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["rm", "-rf", root])


if __name__ == "__main__":
    main()
