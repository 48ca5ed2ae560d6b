"""What real clients ask for (issue 16, docs/COMPATIBILITY.md): in ordinary use (idempotent and
transactional producing, a consumer group with commits, admin listing and describing)
confluent-kafka and kafka-python send no request sluice does not serve, which the broker would
answer by closing the connection with a log line; and an admin call for an API sluice does not
advertise fails in the client with its unsupported-feature error, without reaching the broker."""

import time

import kafka
import pytest
from confluent_kafka import (
    Consumer,
    ElectionType,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import ConfigResource, ResourceType
from kafka.admin import KafkaAdminClient
from kafka.errors import IncompatibleBrokerVersion

from helpers import TIMEOUT, admin, create_topic

REFUSED = ("closing connection", "unknown api key", "unsupported version")


def refused_requests(broker):
    return [ln for ln in broker.log_text().splitlines() if any(r in ln for r in REFUSED)]


def test_ordinary_use_sends_only_served_apis(broker):
    bs = broker.bootstrap
    create_topic(bs, "cov", partitions=2)
    a = admin(bs)

    p = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "linger.ms": 5})
    for i in range(20):
        p.produce("cov", f"m{i}".encode())
    assert p.flush(TIMEOUT) == 0
    t = Producer({"bootstrap.servers": bs, "transactional.id": "cov-tx"})
    t.init_transactions(TIMEOUT)
    t.begin_transaction()
    t.produce("cov", b"in-txn", partition=0)
    t.commit_transaction(TIMEOUT)

    c = Consumer({"bootstrap.servers": bs, "group.id": "cov-g", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.subscribe(["cov"])
    got, deadline = 0, time.monotonic() + TIMEOUT
    while got < 21 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got += 1
    assert got == 21
    c.commit(asynchronous=False)
    c.close()

    a.list_consumer_groups(request_timeout=TIMEOUT).result(TIMEOUT)
    a.describe_consumer_groups(["cov-g"], request_timeout=TIMEOUT)["cov-g"].result(TIMEOUT)
    a.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT)
    (f,) = a.describe_topics(TopicCollection(["cov"]), request_timeout=TIMEOUT).values()
    f.result(TIMEOUT)
    (f,) = a.describe_configs([ConfigResource(ResourceType.TOPIC, "cov")]).values()
    f.result(TIMEOUT)
    a.list_topics(timeout=TIMEOUT)

    kp = kafka.KafkaProducer(bootstrap_servers=bs, acks="all")
    kp.send("cov", b"kp").get(TIMEOUT)
    kp.close()
    kc = kafka.KafkaConsumer("cov", bootstrap_servers=bs, group_id="cov-kp",
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    assert sum(1 for _ in kc) == 22
    kc.commit()
    kc.close()
    ka = KafkaAdminClient(bootstrap_servers=bs)
    try:
        ka.list_topics()
        ka.describe_cluster()
        ka.list_groups()
        ka.describe_groups(["cov-kp"])
        assert ka.describe_features() == {}  # from ApiVersions: no finalized features
    finally:
        ka.close()

    assert refused_requests(broker) == []


def test_unserved_admin_apis_fail_in_the_client(broker):
    bs = broker.bootstrap
    create_topic(bs, "cov")
    a = admin(bs)
    with pytest.raises(KafkaException) as e:
        a.elect_leaders(ElectionType.PREFERRED, [TopicPartition("cov", 0)]).result(TIMEOUT)
    assert e.value.args[0].code() == KafkaError._UNSUPPORTED_FEATURE
    ka = KafkaAdminClient(bootstrap_servers=bs)
    try:
        with pytest.raises(IncompatibleBrokerVersion, match="ListPartitionReassignments"):
            ka.list_partition_reassignments()
        with pytest.raises(IncompatibleBrokerVersion, match="ListConfigResources"):
            ka.list_config_resources()
    finally:
        ka.close()
    assert refused_requests(broker) == []
