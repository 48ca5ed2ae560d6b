"""Topic administration with confluent-kafka's AdminClient and kafka-python's KafkaAdminClient:
create, list, describe, delete, and the errors Kafka gives for bad requests."""

import time

import kafka.errors
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import NewTopic
from kafka.admin import KafkaAdminClient
from kafka.admin import NewTopic as KpNewTopic

from helpers import TIMEOUT, admin, create_topic, kafka_error


def wait_until(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_confluent_admin_topic_lifecycle(broker):
    a = admin(broker.bootstrap)
    futures = a.create_topics([NewTopic("orders", 4, 1), NewTopic("events", 2, 1)])
    for f in futures.values():
        f.result(TIMEOUT)

    listed = a.list_topics(timeout=TIMEOUT).topics
    assert {"orders", "events"} <= set(listed)
    assert len(listed["orders"].partitions) == 4
    assert len(listed["events"].partitions) == 2

    described = a.describe_topics(TopicCollection(["orders"]))["orders"].result(TIMEOUT)
    assert described.name == "orders"
    assert [p.id for p in described.partitions] == [0, 1, 2, 3]
    assert all(p.leader is not None and p.leader.id == 0 for p in described.partitions)

    a.delete_topics(["orders"], operation_timeout=TIMEOUT)["orders"].result(TIMEOUT)
    wait_until(
        lambda: "orders" not in a.list_topics(timeout=TIMEOUT).topics, "orders to disappear"
    )
    assert "events" in a.list_topics(timeout=TIMEOUT).topics


@pytest.mark.parametrize(
    "topic, replication, code",
    [
        ("existing", 1, KafkaError.TOPIC_ALREADY_EXISTS),
        ("bad name!", 1, KafkaError.TOPIC_EXCEPTION),  # INVALID_TOPIC_EXCEPTION (17)
        ("replicated", 3, KafkaError.INVALID_REPLICATION_FACTOR),
    ],
)
def test_confluent_admin_create_errors(broker, topic, replication, code):
    a = admin(broker.bootstrap)
    a.create_topics([NewTopic("existing", 1, 1)])["existing"].result(TIMEOUT)
    future = a.create_topics([NewTopic(topic, 1, replication)])[topic]
    with pytest.raises(KafkaException) as exc:
        future.result(TIMEOUT)
    assert kafka_error(exc.value).code() == code
    assert "replicated" not in a.list_topics(timeout=TIMEOUT).topics


def test_kafka_python_admin_topic_lifecycle(broker):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        result = a.create_topics([KpNewTopic("orders", 3, 1), KpNewTopic("events", 1, 1)])
        assert {t["name"]: t["error_code"] for t in result["topics"]} == {
            "orders": 0,
            "events": 0,
        }
        assert {"orders", "events"} <= set(a.list_topics())

        (orders,) = a.describe_topics(["orders"])
        assert orders["error_code"] == 0
        assert sorted(p["partition_index"] for p in orders["partitions"]) == [0, 1, 2]
        assert all(p["leader_id"] == 0 for p in orders["partitions"])

        a.delete_topics(["orders"])
        wait_until(lambda: "orders" not in a.list_topics(), "orders to disappear")
        assert "events" in a.list_topics()
    finally:
        a.close()


@pytest.mark.parametrize(
    "topic, replication, error",
    [
        ("existing", 1, kafka.errors.TopicAlreadyExistsError),
        ("bad name!", 1, kafka.errors.InvalidTopicError),
        ("replicated", 3, kafka.errors.InvalidReplicationFactorError),
    ],
)
def test_kafka_python_admin_create_errors(broker, topic, replication, error):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        # created with confluent-kafka: kafka-python's own successful create is covered above
        create_topic(broker.bootstrap, "existing")
        with pytest.raises(error):
            a.create_topics([KpNewTopic(topic, 1, replication)])
        assert "replicated" not in a.list_topics()
    finally:
        a.close()
