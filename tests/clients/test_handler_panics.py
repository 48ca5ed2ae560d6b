"""A panic in a request handler is a bug, and it must cost one connection, not a shard: the
broker's fault keys make the requests of one client id panic in their handler
(`sluice.fault.panic.client.id`) or inside a call to the other shard
(`sluice.fault.panic.remote.client.id`). That client's connections close; every other client
goes on producing to and consuming from partitions of both shards; the panics are logged and
counted in /metrics; the broker stops cleanly (exit 0) afterwards."""

import time
import urllib.request

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from helpers import TIMEOUT, consume, create_topic, produce_all, producer, values


def metric(b, name):
    text = urllib.request.urlopen(b.http + "/metrics", timeout=TIMEOUT).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def refused(bootstrap, client_id):
    a = AdminClient({"bootstrap.servers": bootstrap, "client.id": client_id})
    try:
        a.list_topics(timeout=3)
        return False
    except KafkaException:
        return True


def round_trip(bootstrap, topic, partitions):
    for p in range(partitions):
        sent = [f"{topic}-{p}-{i}".encode() for i in range(20)]
        produce_all(producer(bootstrap), topic, sent, partition=p)
        assert values(consume(bootstrap, topic, [p]))[-20:] == sent


def test_a_panicking_handler_closes_only_its_connection(broker_factory):
    b = broker_factory(cores=2, overrides=[
        "sluice.fault.panic.client.id=crasher",
        "sluice.fault.panic.remote.client.id=remote-crasher",
    ])
    create_topic(b.bootstrap, "survives", 4)  # partitions on both shards
    round_trip(b.bootstrap, "survives", 4)
    for who in ("crasher", "remote-crasher"):
        for _ in range(3):  # repeated, on whichever shard accepts the connection
            t0 = time.monotonic()
            assert refused(b.bootstrap, who), f"{who} was answered"
            assert time.monotonic() - t0 < 5
        round_trip(b.bootstrap, "survives", 4)
    assert b.running
    log = b.log_text()
    assert "request handler panicked; closing its connection" in log
    assert "cross-shard call panicked" in log
    assert metric(b, "sluice_request_handler_panics_total") >= 6
    assert b.stop() == 0
