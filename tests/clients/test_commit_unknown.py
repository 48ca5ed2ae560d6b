"""OffsetCommit, AlterConsumerGroupOffsets and TxnOffsetCommit for partitions that do not exist
(issue 16): each such partition answers UNKNOWN_TOPIC_OR_PARTITION and is not stored, while the
existing partitions of the same request are committed. Kafka's request handler does the same,
so a typo in a topic name fails loudly instead of leaving an offset nobody can read back."""

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from kafka.admin import KafkaAdminClient
from kafka.errors import NoError, UnknownTopicOrPartitionError
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KpTopicPartition

from helpers import TIMEOUT, admin, create_topic

UNKNOWN = KafkaError.UNKNOWN_TOPIC_OR_PART  # 3


def committed(bootstrap, group, tps):
    """{(topic, partition): committed offset} read back with confluent-kafka (OffsetFetch)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(t, p) for t, p in tps], timeout=TIMEOUT)
        return {(tp.topic, tp.partition): tp.offset for tp in got}
    finally:
        c.close()


def test_confluent_consumer_commit(broker):
    bs = broker.bootstrap
    create_topic(bs, "real", partitions=2)
    c = Consumer({"bootstrap.servers": bs, "group.id": "g-commit", "enable.auto.commit": False})
    try:
        # librdkafka fails a synchronous commit with the first partition error it got; the
        # stored offsets below show which partitions were taken
        with pytest.raises(KafkaException) as e:
            c.commit(offsets=[TopicPartition("nope", 0, 5)], asynchronous=False)
        assert e.value.args[0].code() == UNKNOWN
        # mixed: a missing topic, a missing partition of an existing topic, two real ones
        mixed = [
            TopicPartition("real", 0, 7),
            TopicPartition("nope", 0, 5),
            TopicPartition("real", 2, 9),  # "real" has partitions 0 and 1
            TopicPartition("real", 1, 11),
        ]
        with pytest.raises(KafkaException) as e:
            c.commit(offsets=mixed, asynchronous=False)
        assert e.value.args[0].code() == UNKNOWN
    finally:
        c.close()
    assert committed(bs, "g-commit", [("real", 0), ("real", 1), ("real", 2), ("nope", 0)]) == {
        ("real", 0): 7,
        ("real", 1): 11,
        ("real", 2): -1001,  # OFFSET_INVALID: nothing stored
        ("nope", 0): -1001,
    }


def test_confluent_alter_consumer_group_offsets(broker):
    bs = broker.bootstrap
    create_topic(bs, "real", partitions=1)
    a = admin(bs)
    req = ConsumerGroupTopicPartitions(
        "g-alter", [TopicPartition("real", 0, 3), TopicPartition("nope", 0, 5)]
    )
    res = a.alter_consumer_group_offsets([req], request_timeout=TIMEOUT)["g-alter"].result(TIMEOUT)
    errors = {
        (tp.topic, tp.partition): tp.error and tp.error.code() for tp in res.topic_partitions
    }
    assert errors == {("real", 0): None, ("nope", 0): UNKNOWN}, res.topic_partitions
    assert committed(bs, "g-alter", [("real", 0), ("nope", 0)]) == {
        ("real", 0): 3,
        ("nope", 0): -1001,
    }


def test_kafka_python_alter_group_offsets(broker):
    bs = broker.bootstrap
    create_topic(bs, "real", partitions=2)
    kp = KafkaAdminClient(bootstrap_servers=bs)
    try:
        out = kp.alter_group_offsets(
            "g-kp",
            {
                KpTopicPartition("real", 1): OffsetAndMetadata(4, "", -1),
                KpTopicPartition("real", 5): OffsetAndMetadata(6, "", -1),
                KpTopicPartition("nope", 0): OffsetAndMetadata(5, "", -1),
            },
        )
    finally:
        kp.close()
    assert out == {
        KpTopicPartition("real", 1): NoError,
        KpTopicPartition("real", 5): UnknownTopicOrPartitionError,
        KpTopicPartition("nope", 0): UnknownTopicOrPartitionError,
    }
    assert committed(bs, "g-kp", [("real", 1), ("real", 5), ("nope", 0)]) == {
        ("real", 1): 4,
        ("real", 5): -1001,
        ("nope", 0): -1001,
    }


def test_txn_offset_commit_unknown_partition(broker):
    """send_offsets_to_transaction with one real and one missing partition: the transaction's
    TxnOffsetCommit answers UNKNOWN_TOPIC_OR_PARTITION for the missing one, and after an abort
    and a clean retry with the real partition only, the commit holds exactly that offset."""
    bs = broker.bootstrap
    create_topic(bs, "real", partitions=1)
    p = Producer({"bootstrap.servers": bs, "transactional.id": "tx-unknown"})
    p.init_transactions(TIMEOUT)
    c = Consumer({"bootstrap.servers": bs, "group.id": "g-txn", "enable.auto.commit": False})
    try:
        meta = c.consumer_group_metadata()
        p.begin_transaction()
        p.produce("real", b"v", partition=0)
        with pytest.raises(KafkaException) as e:
            p.send_offsets_to_transaction(
                [TopicPartition("real", 0, 2), TopicPartition("nope", 0, 5)], meta, TIMEOUT
            )
        assert e.value.args[0].code() == UNKNOWN
        p.abort_transaction(TIMEOUT)
        p.begin_transaction()
        p.produce("real", b"w", partition=0)
        p.send_offsets_to_transaction([TopicPartition("real", 0, 2)], meta, TIMEOUT)
        p.commit_transaction(TIMEOUT)
    finally:
        c.close()
    assert committed(bs, "g-txn", [("real", 0), ("nope", 0)]) == {
        ("real", 0): 2,
        ("nope", 0): -1001,
    }
