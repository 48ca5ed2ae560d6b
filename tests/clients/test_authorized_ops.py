"""Authorized operations (KIP-430) as confluent-kafka's AdminClient and kafka-python report them
(issue 16): Metadata's topic bit field (describe_topics), DescribeCluster's cluster bit field
and DescribeGroups' group bit field. Without an authorizer every operation Kafka defines for the
resource type; with ACLs exactly what the principal's bindings grant, with Kafka's implications
(READ/WRITE/DELETE/ALTER imply DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS; DENY wins and
implies nothing); nothing when the client did not ask."""

from confluent_kafka import TopicCollection
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from kafka.admin import KafkaAdminClient

from helpers import TIMEOUT, admin, create_topic
from test_acls import SECURED, conf

O = AclOperation
ALL_TOPIC = {O.READ, O.WRITE, O.CREATE, O.DELETE, O.ALTER, O.DESCRIBE, O.DESCRIBE_CONFIGS,
             O.ALTER_CONFIGS}
ALL_GROUP = {O.READ, O.DESCRIBE, O.DELETE, O.DESCRIBE_CONFIGS, O.ALTER_CONFIGS}
ALL_CLUSTER = {O.CREATE, O.ALTER, O.DESCRIBE, O.CLUSTER_ACTION, O.DESCRIBE_CONFIGS,
               O.ALTER_CONFIGS, O.IDEMPOTENT_WRITE}


def bits(ops):
    return sum(1 << o.value for o in ops)


def topic_ops(a, topic, include=True):
    (fut,) = a.describe_topics(
        TopicCollection([topic]), include_authorized_operations=include,
        request_timeout=TIMEOUT,
    ).values()
    ops = fut.result(TIMEOUT).authorized_operations
    return None if ops is None else set(ops)


def cluster_ops(a, include=True):
    ops = a.describe_cluster(
        include_authorized_operations=include, request_timeout=TIMEOUT
    ).result(TIMEOUT).authorized_operations
    return None if ops is None else set(ops)


def group_ops(a, group, include=True):
    (fut,) = a.describe_consumer_groups(
        [group], include_authorized_operations=include, request_timeout=TIMEOUT
    ).values()
    ops = fut.result(TIMEOUT).authorized_operations
    return None if ops is None else set(ops)


def kp_topic_ops(bootstrap, topic, **sasl):
    """The raw topic bit field of DescribeTopicPartitions, through kafka-python."""
    kp = KafkaAdminClient(bootstrap_servers=bootstrap, **sasl)
    try:
        res = kp.describe_topic_partitions([topic])
    finally:
        kp.close()
    (t,) = res["topics"]
    assert t["name"] == topic and t["error_code"] == 0, t
    return t["topic_authorized_operations"]


def test_without_an_authorizer_everything(broker):
    bs = broker.bootstrap
    create_topic(bs, "ops")
    a = admin(bs)
    assert topic_ops(a, "ops") == ALL_TOPIC
    assert cluster_ops(a) == ALL_CLUSTER
    assert group_ops(a, "ops-group") == ALL_GROUP
    # not asked for: nothing (the broker answers i32::MIN, librdkafka reports None)
    assert topic_ops(a, "ops", include=False) is None
    assert cluster_ops(a, include=False) is None
    assert group_ops(a, "ops-group", include=False) is None

    # kafka-python's DescribeTopicPartitions: Kafka always fills the topic bit field in
    assert kp_topic_ops(bs, "ops") == bits(ALL_TOPIC)


def test_acls_decide_per_principal(broker_factory):
    b = broker_factory(overrides=SECURED)
    su = AdminClient(conf(b, "admin", "admin-secret"))
    for f in su.create_topics([NewTopic("ops", 1, 1)]).values():
        f.result(TIMEOUT)
    bindings = [
        # usercc: READ and ALTER_CONFIGS on the topic (implying DESCRIBE, DESCRIBE_CONFIGS)
        (ResourceType.TOPIC, "ops", O.READ, AclPermissionType.ALLOW),
        (ResourceType.TOPIC, "ops", O.ALTER_CONFIGS, AclPermissionType.ALLOW),
        # ALL on groups with the prefix "ops-", but DELETE denied on ops-g
        (ResourceType.GROUP, "ops-g", O.ALL, AclPermissionType.ALLOW),
        (ResourceType.GROUP, "ops-g", O.DELETE, AclPermissionType.DENY),
        # WRITE on another group (implies DESCRIBE; WRITE is no group operation)
        (ResourceType.GROUP, "ops-w", O.WRITE, AclPermissionType.ALLOW),
        # on the cluster: IDEMPOTENT_WRITE and DESCRIBE
        (ResourceType.BROKER, "kafka-cluster", O.IDEMPOTENT_WRITE, AclPermissionType.ALLOW),
        (ResourceType.BROKER, "kafka-cluster", O.DESCRIBE, AclPermissionType.ALLOW),
    ]
    futs = su.create_acls([
        AclBinding(rt, name, ResourcePatternType.LITERAL, "User:usercc", "*", o, perm)
        for rt, name, o, perm in bindings
    ])
    for f in futs.values():
        f.result(TIMEOUT)

    cc = AdminClient(conf(b, "usercc", "cc-secret"))
    assert topic_ops(cc, "ops") == {O.READ, O.DESCRIBE, O.ALTER_CONFIGS, O.DESCRIBE_CONFIGS}
    assert group_ops(cc, "ops-g") == ALL_GROUP - {O.DELETE}
    assert group_ops(cc, "ops-w") == {O.DESCRIBE}
    assert cluster_ops(cc) == {O.IDEMPOTENT_WRITE, O.DESCRIBE}
    sasl = conf(b, "usercc", "cc-secret")
    assert kp_topic_ops(
        sasl["bootstrap.servers"], "ops", security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN", sasl_plain_username="usercc", sasl_plain_password="cc-secret",
    ) == bits({O.READ, O.DESCRIBE, O.ALTER_CONFIGS, O.DESCRIBE_CONFIGS})
    # the super user may do everything
    assert topic_ops(su, "ops") == ALL_TOPIC
    assert group_ops(su, "ops-g") == ALL_GROUP
    assert cluster_ops(su) == ALL_CLUSTER

    # a change applies at once: DENY DESCRIBE_CONFIGS on the topic takes it (and only it) away
    for f in su.create_acls([
        AclBinding(ResourceType.TOPIC, "ops", ResourcePatternType.LITERAL, "User:usercc", "*",
                   O.DESCRIBE_CONFIGS, AclPermissionType.DENY)
    ]).values():
        f.result(TIMEOUT)
    assert topic_ops(cc, "ops") == {O.READ, O.DESCRIBE, O.ALTER_CONFIGS}
