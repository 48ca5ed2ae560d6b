"""Load processes of the soak test (test_soak.py), run as `python soak_load.py <role> ...` so that
they do not share the test's interpreter lock:

- `produce BOOTSTRAP TOPIC SECONDS`: a confluent-kafka producer (acks=all, idempotent) floods
  every partition of TOPIC for SECONDS, then flushes and prints one JSON line:
  {"sent", "delivered", "errors", "error_names"}.
- `idle PORT COUNT SECONDS`: opens COUNT plain connections, each answering an ApiVersions, keeps
  them open for SECONDS while asking a rotating sample to answer again every second, and prints
  {"opened", "refused", "asked", "answered", "unanswered"}. A connection the broker refuses
  (closed at once) is counted as refused, which is an answer too (max.connections).
"""

import json
import os
import random
import socket
import struct
import sys
import time


def produce(bootstrap, topic, seconds):
    from confluent_kafka import Producer

    stats = {"sent": 0, "delivered": 0, "errors": 0, "error_names": {}}

    def delivered(err, _msg):
        if err is None:
            stats["delivered"] += 1
        else:
            stats["errors"] += 1
            name = err.name()
            stats["error_names"][name] = stats["error_names"].get(name, 0) + 1

    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "queue.buffering.max.messages": 200000,
    })
    meta = p.list_topics(topic, timeout=30)
    partitions = len(meta.topics[topic].partitions)
    value = os.urandom(200)
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        try:
            p.produce(topic, value, partition=i % partitions, on_delivery=delivered)
            stats["sent"] += 1
            i += 1
        except BufferError:
            p.poll(0.01)
            continue
        if i % 1000 == 0:
            p.poll(0)
    p.flush(120)
    print(json.dumps(stats), flush=True)


def api_versions_frame(corr):
    client = b"soak"
    body = struct.pack(">hhih", 18, 0, corr, len(client)) + client
    return struct.pack(">i", len(body)) + body


def read_answer(sock, timeout):
    """The correlation id of one answer, or None if the broker closed the connection."""
    sock.settimeout(timeout)
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    size = struct.unpack(">i", head)[0]
    body = b""
    while len(body) < size:
        chunk = sock.recv(min(65536, size - len(body)))
        if not chunk:
            return None
        body += chunk
    return struct.unpack(">i", body[:4])[0]


def idle(port, count, seconds):
    stats = {"opened": 0, "refused": 0, "asked": 0, "answered": 0, "unanswered": 0}
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(api_versions_frame(i))
        try:
            got = read_answer(s, 30)
        except OSError:
            got = None
        if got == i:
            socks.append(s)
            stats["opened"] += 1
        else:
            stats["refused"] += 1
            s.close()
    print(json.dumps({"ready": stats["opened"]}), flush=True)
    end = time.monotonic() + seconds
    corr = count
    rng = random.Random(7)
    while time.monotonic() < end and socks:
        for s in rng.sample(socks, min(100, len(socks))):
            corr += 1
            stats["asked"] += 1
            try:
                s.sendall(api_versions_frame(corr))
                ok = read_answer(s, 30) == corr
            except OSError:
                ok = False
            stats["answered" if ok else "unanswered"] += 1
        time.sleep(1)
    for s in socks:
        s.close()
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "produce":
        produce(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    elif role == "idle":
        idle(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(f"unknown role {role}")
