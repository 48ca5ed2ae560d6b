"""ListOffsets (by timestamp, earliest, latest), DeleteRecords and DescribeLogDirs, as clients
see them."""

import os

from confluent_kafka import OFFSET_END, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.structs import TopicPartition as KpTopicPartition

from helpers import TIMEOUT, admin, consume, consumer, create_topic, produce_all, producer, values

BASE_TS = 1_700_000_000_000  # ms; far from "now" so broker-assigned times cannot match


def offsets_for_times(bootstrap, topic, targets):
    """{target timestamp: offset} for partition 0, via confluent-kafka's offsets_for_times
    (one lookup per target: a request may name a partition only once)."""
    c = consumer(bootstrap)
    found = {}
    try:
        for t in targets:
            (tp,) = c.offsets_for_times([TopicPartition(topic, 0, t)], TIMEOUT)
            assert tp.error is None, f"offsets_for_times({t}): {tp.error}"
            found[t] = tp.offset
    finally:
        c.close()
    return found


def watermarks(bootstrap, topic, partition=0):
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), TIMEOUT, cached=False)
    finally:
        c.close()


def test_offsets_for_times_in_separate_batches(broker):
    create_topic(broker.bootstrap, "times")
    prod = producer(broker.bootstrap, linger_ms=0)
    for i in range(10):  # one flush per message: one batch per message
        produce_all(prod, "times", [f"m{i}".encode()], partition=0, timestamp=BASE_TS + i * 1000)
    found = offsets_for_times(
        broker.bootstrap,
        "times",
        [BASE_TS - 5000, BASE_TS, BASE_TS + 1, BASE_TS + 3500, BASE_TS + 9000, BASE_TS + 9001],
    )
    assert found == {
        BASE_TS - 5000: 0,
        BASE_TS: 0,
        BASE_TS + 1: 1,
        BASE_TS + 3500: 4,
        BASE_TS + 9000: 9,
        BASE_TS + 9001: OFFSET_END,  # -1: no record at or after the target
    }
    got = consume(broker.bootstrap, "times", [0])
    assert [r.timestamp for r in got] == [BASE_TS + i * 1000 for i in range(10)]


def test_offsets_for_times_inside_one_batch(broker):
    """Timestamps within a batch, not monotonic: the answer is the first offset (in log order)
    whose timestamp is >= the target, not the batch's first offset nor its max timestamp's."""
    create_topic(broker.bootstrap, "times")
    stamps = [BASE_TS + d for d in (0, 5000, 2000, 6000, 3000, 1000)]
    prod = producer(broker.bootstrap, linger_ms=200)  # all six in one batch
    for i, ts in enumerate(stamps):
        prod.produce("times", value=f"m{i}".encode(), partition=0, timestamp=ts)
    assert prod.flush(TIMEOUT) == 0
    found = offsets_for_times(
        broker.bootstrap,
        "times",
        [BASE_TS, BASE_TS + 500, BASE_TS + 2500, BASE_TS + 5500, BASE_TS + 6000, BASE_TS + 7000],
    )
    assert found == {
        BASE_TS: 0,
        BASE_TS + 500: 1,
        BASE_TS + 2500: 1,
        BASE_TS + 5500: 3,
        BASE_TS + 6000: 3,
        BASE_TS + 7000: OFFSET_END,
    }
    assert [r.timestamp for r in consume(broker.bootstrap, "times", [0])] == stamps


def test_watermarks_and_empty_partition(broker):
    create_topic(broker.bootstrap, "marks", partitions=2)
    assert watermarks(broker.bootstrap, "marks", 0) == (0, 0)
    assert offsets_for_times(broker.bootstrap, "marks", [BASE_TS]) == {BASE_TS: OFFSET_END}
    produce_all(producer(broker.bootstrap), "marks", [b"x"] * 25, partition=0)
    assert watermarks(broker.bootstrap, "marks", 0) == (0, 25)
    assert watermarks(broker.bootstrap, "marks", 1) == (0, 0)


def test_delete_records_then_consume(broker):
    create_topic(broker.bootstrap, "trimmed", partitions=2)
    prod = producer(broker.bootstrap, linger_ms=20)
    for p in (0, 1):
        produce_all(prod, "trimmed", [f"p{p}-{i}".encode() for i in range(40)], partition=p)

    # confluent-kafka: partition 0 up to offset 15 (inside a batch)
    a = admin(broker.bootstrap)
    result = a.delete_records([TopicPartition("trimmed", 0, 15)], operation_timeout=TIMEOUT)
    deleted = result[TopicPartition("trimmed", 0)].result(TIMEOUT)
    assert deleted.low_watermark == 15
    # kafka-python: partition 1 up to offset 32
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        kp.delete_records({KpTopicPartition("trimmed", 1): 32})
    finally:
        kp.close()

    def check():
        assert watermarks(broker.bootstrap, "trimmed", 0) == (15, 40)
        assert watermarks(broker.bootstrap, "trimmed", 1) == (32, 40)
        got = consume(broker.bootstrap, "trimmed", [0, 1])
        assert [(r.partition, r.offset) for r in got if r.partition == 0] == [
            (0, i) for i in range(15, 40)
        ]
        assert [(r.partition, r.offset) for r in got if r.partition == 1] == [
            (1, i) for i in range(32, 40)
        ]
        assert values(got)[0] in (b"p0-15", b"p1-32")

    check()
    broker.restart()  # the log start offset is durable
    check()

    # "clear all data from the topic": delete up to the high watermark (-1)
    a = admin(broker.bootstrap)
    result = a.delete_records([TopicPartition("trimmed", 0, -1)], operation_timeout=TIMEOUT)
    assert result[TopicPartition("trimmed", 0)].result(TIMEOUT).low_watermark == 40
    assert watermarks(broker.bootstrap, "trimmed", 0) == (40, 40)
    assert consume(broker.bootstrap, "trimmed", [0]) == []
    d = produce_all(producer(broker.bootstrap), "trimmed", [b"after"], partition=0)
    assert d.ok[0].offset == 40
    assert values(consume(broker.bootstrap, "trimmed", [0])) == [b"after"]


def log_dir_sizes(bootstrap, topic):
    """({partition: size in bytes}, log dir paths) from kafka-python's describe_log_dirs."""
    kp = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (resp,) = kp.describe_log_dirs()
    finally:
        kp.close()
    sizes, dirs = {}, []
    for d in resp["log_dirs"]:
        assert d["error_code"] == 0, d
        dirs.append(d["log_dir"])
        for t in d["topics"]:
            if t["name"] == topic:
                for p in t["partitions"]:
                    sizes[p["partition_index"]] = p["partition_size"]
    return sizes, dirs


def test_describe_log_dirs_sizes_grow(broker):
    create_topic(broker.bootstrap, "sized", partitions=2)
    sizes, dirs = log_dir_sizes(broker.bootstrap, "sized")
    assert [os.path.realpath(d) for d in dirs] == [os.path.realpath(broker.data_dir)]
    assert sizes == {0: 0, 1: 0}

    payload = b"x" * 1000
    prod = producer(broker.bootstrap, acks="all")
    produce_all(prod, "sized", [payload] * 100, partition=0)
    first, _ = log_dir_sizes(broker.bootstrap, "sized")
    assert first[0] >= 100 * len(payload), first
    assert first[1] == 0

    produce_all(prod, "sized", [payload] * 100, partition=0)
    produce_all(prod, "sized", [payload] * 10, partition=1)
    second, _ = log_dir_sizes(broker.bootstrap, "sized")
    assert second[0] >= first[0] + 100 * len(payload), (first, second)
    assert second[1] >= 10 * len(payload), second
