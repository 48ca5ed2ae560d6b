"""Connection limits (issue 17): `max.connections.per.ip` and `max.connections` close sockets
beyond the limit at once while the admitted ones are served, and give the place back when a
connection ends; `connections.max.idle.ms` closes a connection that sends nothing, but not one
that keeps sending requests or waits on a long-polling fetch."""

import socket
import struct
import time

import pytest

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from helpers import consume, create_topic, produce_all, producer, values


def api_versions(sock, corr=1):
    """Sends ApiVersions v0 and reads the answer's correlation id."""
    client = b"raw"
    body = struct.pack(">hhih", 18, 0, corr, len(client)) + client
    sock.sendall(struct.pack(">i", len(body)) + body)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    answer = recv_exact(sock, size)
    return struct.unpack(">i", answer[:4])[0]


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the broker")
        buf += chunk
    return buf


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def served(port, corr, within=5.0):
    """A connection the broker admitted and answers. Retried for a moment: the start-up probe's
    connection (conftest's wait_for_port) may still hold its place until the broker sees it
    closed."""
    deadline = time.monotonic() + within
    while True:
        s = connect(port)
        try:
            assert api_versions(s, corr) == corr
            return s
        except ConnectionError:
            s.close()
            assert time.monotonic() < deadline, "no connection admitted"
            time.sleep(0.1)


def closed_by_broker(sock, within):
    """True if the broker closes `sock` within `within` seconds (it sends nothing)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionError:
        return True


def can_list(bootstrap):
    a = AdminClient({"bootstrap.servers": bootstrap})
    try:
        a.list_topics(timeout=3)
        return True
    except KafkaException:
        return False


@pytest.mark.parametrize("key", ["max.connections.per.ip", "max.connections"])
def test_connections_over_the_limit_are_closed(broker_factory, key):
    b = broker_factory(overrides=[f"{key}=4"])
    held = [served(b.port, i) for i in range(4)]
    extra = connect(b.port)
    assert closed_by_broker(extra, 3), f"a fifth connection is closed ({key}=4)"
    assert not can_list(b.bootstrap), "the limit holds for real clients too"
    for s in held[:2]:
        s.close()
    time.sleep(0.3)
    assert can_list(b.bootstrap), "closed connections gave their places back"
    for i, s in enumerate(held[2:]):
        assert api_versions(s, 10 + i) == 10 + i, "the others were never disturbed"
    for s in held[2:]:
        s.close()


def test_idle_connections_are_closed(broker_factory):
    b = broker_factory(overrides=["connections.max.idle.ms=1000"])
    create_topic(b.bootstrap, "idle-topic", 1)
    silent = connect(b.port)
    t0 = time.monotonic()
    assert closed_by_broker(silent, 5), "a silent connection is closed"
    assert 0.8 <= time.monotonic() - t0 <= 4.0
    # one that keeps asking stays open past the idle time
    busy = connect(b.port)
    deadline = time.monotonic() + 3.0
    n = 0
    while time.monotonic() < deadline:
        assert api_versions(busy, n) == n
        n += 1
        time.sleep(0.3)
    busy.close()
    # real clients reconnect on their own and carry on
    sent = [b"a", b"b", b"c"]
    p = producer(b.bootstrap)
    produce_all(p, "idle-topic", sent[:1])
    time.sleep(2.5)  # the producer's connection is closed meanwhile
    produce_all(p, "idle-topic", sent[1:])
    assert values(consume(b.bootstrap, "idle-topic", [0])) == sent


def test_a_small_request_budget_still_serves_pipelined_requests(broker_factory):
    """queued.max.request.bytes far below what a pipelining producer sends: its requests are
    read as the earlier ones finish (never all at once), and every record arrives."""
    b = broker_factory(overrides=["queued.max.request.bytes=2000"])
    create_topic(b.bootstrap, "budget", 1)
    sent = [b"%05d" % i + b"x" * 500 for i in range(2000)]
    p = producer(b.bootstrap, linger_ms=0, batch_size=4096,
                 max_in_flight_requests_per_connection=5)
    produce_all(p, "budget", sent)
    assert values(consume(b.bootstrap, "budget", [0])) == sent
