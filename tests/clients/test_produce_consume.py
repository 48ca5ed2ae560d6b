"""Produce and consume with confluent-kafka and kafka-python: keyed partitioning, headers,
explicit assignment and seeks, every acks level, and the long-poll wake-up at the tail."""

import threading
import time
import zlib

import kafka
import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from helpers import (
    by_partition,
    consume,
    consumer,
    create_topic,
    kp_consume,
    kp_producer,
    produce_all,
    producer,
    values,
)


def keys_for_each_partition(partitions):
    """One key per partition under librdkafka's default partitioner (consistent_random:
    CRC32 of the key modulo the partition count)."""
    found = {}
    i = 0
    while len(found) < partitions:
        key = f"key-{i}".encode()
        found.setdefault(zlib.crc32(key) % partitions, key)
        i += 1
    return [found[p] for p in range(partitions)]


def test_keyed_messages_stay_on_their_partition_in_order(broker):
    create_topic(broker.bootstrap, "keyed", partitions=3)
    keys = keys_for_each_partition(3)
    n = 200
    sent = [(k, f"{k.decode()}-{i}".encode()) for i in range(n) for k in keys]
    d = produce_all(producer(broker.bootstrap), "keyed", [v for _, v in sent], [k for k, _ in sent])

    reported = {(r.key, r.value): (r.partition, r.offset) for r in d.ok}
    got = consume(broker.bootstrap, "keyed", [0, 1, 2])
    assert len(got) == len(sent)
    for key in keys:
        recs = [r for r in got if r.key == key]
        assert {r.partition for r in recs} == {zlib.crc32(key) % 3}, f"key {key} spread"
        assert values(recs) == [v for k, v in sent if k == key], f"key {key} out of order"
        assert all(reported[(r.key, r.value)] == (r.partition, r.offset) for r in recs)
    for p, recs in by_partition(got).items():
        assert [r.offset for r in recs] == list(range(n)), f"partition {p} offsets"


HEADERS = [
    ("trace-id", b"0af7651916cd43dd8448eb211c80319c"),
    ("dup", b"first"),
    ("dup", b"second"),  # repeated keys keep their order
    ("empty", b""),
    ("binary", bytes(range(256))),
]


def test_headers_confluent_to_both_clients(broker):
    create_topic(broker.bootstrap, "headers")
    prod = producer(broker.bootstrap)
    for i in range(3):
        prod.produce("headers", value=f"m{i}".encode(), headers=HEADERS + [("i", str(i).encode())])
    prod.produce("headers", value=b"bare")
    assert prod.flush(30) == 0

    expected = [tuple(HEADERS + [("i", str(i).encode())]) for i in range(3)] + [()]
    got = consume(broker.bootstrap, "headers", [0])
    assert [r.headers for r in got] == expected
    got = kp_consume(broker.bootstrap, "headers", [0], expected=4)
    assert [r.headers for r in got] == expected


def test_headers_kafka_python_to_both_clients(broker):
    create_topic(broker.bootstrap, "headers")
    prod = kp_producer(broker.bootstrap, acks="all")
    try:
        for i in range(3):
            prod.send("headers", value=f"m{i}".encode(), headers=HEADERS).get(30)
        prod.send("headers", value=b"bare").get(30)
    finally:
        prod.close()

    expected = [tuple(HEADERS)] * 3 + [()]
    assert [r.headers for r in consume(broker.bootstrap, "headers", [0])] == expected
    got = kp_consume(broker.bootstrap, "headers", [0], expected=4)
    assert [r.headers for r in got] == expected


def fill_partitions(broker, topic, partitions, per_partition):
    """Produces `per_partition` values "p{p}-{i}" into each partition explicitly."""
    create_topic(broker.bootstrap, topic, partitions=partitions)
    prod = producer(broker.bootstrap, linger_ms=50)  # one batch per partition
    for p in range(partitions):
        produce_all(prod, topic, [f"p{p}-{i}".encode() for i in range(per_partition)], partition=p)


def test_kafka_python_assign_and_seek_to_beginning(broker):
    fill_partitions(broker, "assigned", 3, 20)
    got = kp_consume(broker.bootstrap, "assigned", [1], expected=20, timeout_ms=5000)
    assert [(r.partition, r.offset) for r in got] == [(1, i) for i in range(20)]
    assert values(got) == [f"p1-{i}".encode() for i in range(20)]


def test_kafka_python_seek_into_the_middle_of_a_batch(broker):
    fill_partitions(broker, "seeked", 1, 20)
    c = kafka.KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=None, consumer_timeout_ms=5000
    )
    try:
        tp = kafka.TopicPartition("seeked", 0)
        c.assign([tp])
        c.seek(tp, 13)
        got = []
        for r in c:  # ends after consumer_timeout_ms without records
            got.append((r.offset, r.value))
            if r.offset == 19:
                break
    finally:
        c.close()
    assert got == [(i, f"p0-{i}".encode()) for i in range(13, 20)]


def test_confluent_assign_offset_beginning_and_mid_batch(broker):
    fill_partitions(broker, "assigned", 3, 20)
    got = consume(broker.bootstrap, "assigned", [2], start=OFFSET_BEGINNING)
    assert [(r.partition, r.offset, r.value) for r in got] == [
        (2, i, f"p2-{i}".encode()) for i in range(20)
    ]
    # a fetch starting inside a batch: the broker returns the whole batch, the client skips
    got = consume(broker.bootstrap, "assigned", [0, 1], start={0: 7, 1: 19})
    assert [(r.partition, r.offset) for r in got] == [(0, i) for i in range(7, 20)] + [(1, 19)]


ACKS = ["0", "1", "all"]


@pytest.mark.parametrize("acks", ACKS)
def test_confluent_acks(broker, acks):
    create_topic(broker.bootstrap, "acks", partitions=2)
    sent = [f"acks{acks}-{i}".encode() for i in range(500)]
    d = produce_all(producer(broker.bootstrap, acks=acks), "acks", sent)
    if acks != "0":
        assert all(r.offset >= 0 for r in d.ok)
    got = consume(broker.bootstrap, "acks", [0, 1])
    assert sorted(values(got)) == sorted(sent)
    if acks != "0":
        assert {(r.partition, r.offset, r.value) for r in got} == {
            (r.partition, r.offset, r.value) for r in d.ok
        }


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_kafka_python_acks(broker, acks):
    create_topic(broker.bootstrap, "acks", partitions=2)
    prod = kp_producer(broker.bootstrap, acks=acks, linger_ms=5)
    sent = [f"acks{acks}-{i}".encode() for i in range(300)]
    try:
        futures = [prod.send("acks", value=v) for v in sent]
        prod.flush(30)
        metas = [f.get(30) for f in futures]
    finally:
        prod.close()
    got = consume(broker.bootstrap, "acks", [0, 1])
    assert sorted(values(got)) == sorted(sent)
    if acks != 0:
        acked = {(m.partition, m.offset, v) for m, v in zip(metas, sent)}
        assert {(r.partition, r.offset, r.value) for r in got} == acked


def test_kafka_python_default_producer(broker):
    """KafkaProducer with its defaults: acks=all and idempotence (InitProducerId, producer id
    and sequence numbers in every batch), as most kafka-python users run it."""
    create_topic(broker.bootstrap, "defaults", partitions=2)
    prod = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap)
    sent = [f"default-{i}".encode() for i in range(200)]
    try:
        metas = [f.get(30) for f in [prod.send("defaults", value=v) for v in sent]]
    finally:
        prod.close()
    got = consume(broker.bootstrap, "defaults", [0, 1])
    assert {(r.partition, r.offset, r.value) for r in got} == {
        (m.partition, m.offset, v) for m, v in zip(metas, sent)
    }


def test_waiting_consumer_is_woken_by_a_new_message(broker):
    create_topic(broker.bootstrap, "tail")
    prod = producer(broker.bootstrap, linger_ms=0)
    produce_all(prod, "tail", [b"old"])
    c = consumer(broker.bootstrap, fetch_wait_max_ms=5000, enable_partition_eof=False)
    try:
        c.assign([TopicPartition("tail", 0, 1)])
        assert c.poll(1.0) is None  # the consumer is now parked in a long poll at the tail

        sent_at = {}

        def produce_later():
            time.sleep(1.0)
            sent_at["t"] = time.monotonic()
            prod.produce("tail", value=b"new")
            prod.flush(10)

        t = threading.Thread(target=produce_later)
        t.start()
        deadline = time.monotonic() + 10
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = c.poll(0.1)
        received_at = time.monotonic()
        t.join()
    finally:
        c.close()
    assert msg is not None and msg.error() is None, f"no message: {msg and msg.error()}"
    assert (msg.offset(), msg.value()) == (1, b"new")
    latency = received_at - sent_at["t"]
    assert latency < 3.0, f"message produced at the tail took {latency:.2f}s to arrive"
