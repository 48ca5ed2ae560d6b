"""The seeds' ACL lab with real clients: an authorizer with a super user; a user granted
CREATE/READ/WRITE/DESCRIBE on three topics and READ on every group does exactly that, a second
user is refused with Kafka's codes (produce, consume, group join, offset commit, topic create and
delete, transactions), Metadata hides what a user may not describe, ACLs are listed, survive a
restart and take effect at once on open connections."""

import subprocess
import time

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from kafka.admin import ACLFilter as KpFilter
from kafka.admin import (
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePatternFilter,
)
from kafka.admin import ResourceType as KpResourceType
from kafka.errors import ClusterAuthorizationFailedError

from certs import CA
from cluster_helpers import managed_cluster
from conftest import server_binary
from helpers import TIMEOUT

JAAS = (
    "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
    'user_admin="admin-secret" user_usercc="cc-secret" user_other="other-secret";'
)
SECURED = [
    "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
    JAAS,
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users=User:admin",
]
TOPICS = ["Topic_One", "Topic_Two", "Topic_Four"]


def conf(b, user, password):
    return {
        "bootstrap.servers": f"127.0.0.1:{b.listeners['SASL_PLAINTEXT'][1]}",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": password,
    }


def grant_lab(admin):
    bindings = [
        AclBinding(ResourceType.TOPIC, t, ResourcePatternType.LITERAL, "User:usercc", "*", o,
                   AclPermissionType.ALLOW)
        for t in TOPICS
        for o in (AclOperation.CREATE, AclOperation.READ, AclOperation.WRITE,
                  AclOperation.DESCRIBE)
    ] + [
        AclBinding(ResourceType.GROUP, "*", ResourcePatternType.LITERAL, "User:usercc", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
        # other may read Topic_One, and use group other-assign only (librdkafka asks a
        # consumer's group coordinator even for assigned partitions)
        AclBinding(ResourceType.TOPIC, "Topic_One", ResourcePatternType.LITERAL, "User:other",
                   "*", AclOperation.READ, AclPermissionType.ALLOW),
        AclBinding(ResourceType.GROUP, "other-assign", ResourcePatternType.LITERAL, "User:other",
                   "*", AclOperation.READ, AclPermissionType.ALLOW),
        # and see Topic_Four (DESCRIBE) without reading or writing it
        AclBinding(ResourceType.TOPIC, "Topic_Four", ResourcePatternType.LITERAL, "User:other",
                   "*", AclOperation.DESCRIBE, AclPermissionType.ALLOW),
    ]
    for f in admin.create_acls(bindings).values():
        f.result(TIMEOUT)
    return bindings


def produce_error(c, topic, **extra):
    """Produces one message; returns the delivery error code (None when delivered)."""
    errs = []
    p = Producer({**c, "message.timeout.ms": 10000, **extra})
    p.produce(topic, b"x", on_delivery=lambda e, m: errs.append(e))
    p.flush(15)
    assert errs, "no delivery report"
    return None if errs[0] is None else errs[0].code()


def consume_error(c, topic, group=None, assign_group="other-assign"):
    """Polls `topic` (assigned, or subscribed in `group`) until a message or an error."""
    cons = Consumer({**c, "group.id": group or assign_group, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False})
    try:
        if group:
            cons.subscribe([topic])
        else:
            cons.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            m = cons.poll(0.5)
            if m is None:
                continue
            if m.error():
                return m.error().code()
            if group:
                cons.commit(m, asynchronous=False)
            return None
        raise AssertionError(f"no message and no error from {topic}")
    finally:
        cons.close()


def test_the_seed_acl_lab(broker_factory):
    b = broker_factory(overrides=SECURED)
    admin = AdminClient(conf(b, "admin", "admin-secret"))
    bindings = grant_lab(admin)

    cc = conf(b, "usercc", "cc-secret")
    cc_admin = AdminClient(cc)
    for f in cc_admin.create_topics([NewTopic(t, 1, 1) for t in TOPICS]).values():
        f.result(TIMEOUT)
    assert produce_error(cc, "Topic_Four") is None
    assert produce_error(cc, "Topic_One") is None
    assert consume_error(cc, "Topic_Four", group="cc-group") is None  # join, fetch, commit
    assert sorted(cc_admin.list_topics(timeout=TIMEOUT).topics) == sorted(TOPICS)

    other = conf(b, "other", "other-secret")
    other_admin = AdminClient(other)
    err = KafkaError
    assert produce_error(other, "Topic_Four") == err.TOPIC_AUTHORIZATION_FAILED
    assert consume_error(other, "Topic_Four") == err.TOPIC_AUTHORIZATION_FAILED
    assert consume_error(other, "Topic_One", group="other-group") == err.GROUP_AUTHORIZATION_FAILED
    assert consume_error(other, "Topic_One") is None, "READ on Topic_One without a group"
    assert sorted(other_admin.list_topics(timeout=TIMEOUT).topics) == ["Topic_Four", "Topic_One"]
    with pytest.raises(KafkaException) as e:
        other_admin.create_topics([NewTopic("Topic_Five", 1, 1)])["Topic_Five"].result(TIMEOUT)
    assert e.value.args[0].code() == err.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as e:
        other_admin.delete_topics(["Topic_One"])["Topic_One"].result(TIMEOUT)
    assert e.value.args[0].code() == err.TOPIC_AUTHORIZATION_FAILED
    tp = Producer({**other, "transactional.id": "other-txn"})
    with pytest.raises(KafkaException) as e:
        tp.init_transactions(15)
    assert e.value.args[0].code() == err.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    # committed offsets of a topic other may not describe do not leak through OffsetFetch
    committer = Consumer({**conf(b, "admin", "admin-secret"), "group.id": "other-assign"})
    committer.commit(offsets=[TopicPartition("Topic_Two", 0, 7), TopicPartition("Topic_One", 0, 1)],
                     asynchronous=False)
    committer.close()
    seen = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions("other-assign")])["other-assign"].result(TIMEOUT)
    assert {tp.topic for tp in seen.topic_partitions} == {"Topic_One", "Topic_Two"}
    seen = other_admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions("other-assign")])["other-assign"].result(TIMEOUT)
    assert {tp.topic for tp in seen.topic_partitions} == {"Topic_One"}
    named = other_admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(
        "other-assign", [TopicPartition("Topic_Two", 0)])])["other-assign"].result(TIMEOUT)
    assert named.topic_partitions[0].offset != 7
    assert named.topic_partitions[0].error.code() == err.TOPIC_AUTHORIZATION_FAILED
    # groups other may not describe are not listed (usercc's cc-group is; admin sees it)
    listed = {g.group_id for g in other_admin.list_consumer_groups().result(TIMEOUT).valid}
    assert "cc-group" not in listed
    assert "cc-group" in {g.group_id for g in admin.list_consumer_groups().result(TIMEOUT).valid}
    res = ConfigResource(ResourceType.TOPIC, "Topic_Four")
    with pytest.raises(KafkaException) as e:
        other_admin.describe_configs([res])[res].result(TIMEOUT)
    assert e.value.args[0].code() == err.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as e:
        other_admin.create_partitions([NewPartitions("Topic_One", 3)])["Topic_One"].result(TIMEOUT)
    assert e.value.args[0].code() == err.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as e:
        other_admin.delete_records([TopicPartition("Topic_One", 0, 1)])[
            TopicPartition("Topic_One", 0, 1)].result(TIMEOUT)
    assert e.value.args[0].code() == err.TOPIC_AUTHORIZATION_FAILED
    # (kafka-python: confluent-kafka 2.16 does not raise DescribeAcls' top-level error)
    kp = KafkaAdminClient(
        bootstrap_servers=other["bootstrap.servers"], security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN", sasl_plain_username="other", sasl_plain_password="other-secret",
    )
    with pytest.raises(ClusterAuthorizationFailedError):
        kp.describe_acls(KpFilter(
            principal=None, host="*", operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(KpResourceType.ANY, None,
                                                   ACLResourcePatternType.ANY)))
    kp.close()

    # DescribeCluster reports the cluster operations each principal may do; DescribeQuorum
    # needs DESCRIBE on the cluster
    ops = admin.describe_cluster(include_authorized_operations=True).result(TIMEOUT)
    assert AclOperation.ALTER in ops.authorized_operations
    ops = other_admin.describe_cluster(include_authorized_operations=True).result(TIMEOUT)
    assert not ops.authorized_operations
    cli = [str(server_binary().parent / "sluice"), "-b", other["bootstrap.servers"],
           "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=PLAIN",
           "-X", "sasl.username=other", "-X", "sasl.password=other-secret", "cluster", "quorum"]
    r = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "ClusterAuthorizationFailed" in r.stderr, r.stderr
    cli[cli.index("sasl.username=other")] = "sasl.username=admin"
    cli[cli.index("sasl.password=other-secret")] = "sasl.password=admin-secret"
    r = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr

    # listing, by filter
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    assert sorted(map(str, admin.describe_acls(everything).result(TIMEOUT))) == sorted(
        map(str, bindings))
    four = AclBindingFilter(ResourceType.TOPIC, "Topic_Four", ResourcePatternType.MATCH, None,
                            None, AclOperation.ANY, AclPermissionType.ANY)
    assert len(admin.describe_acls(four).result(TIMEOUT)) == 5

    # durable: after a restart the same ACLs are in force
    b.restart()
    admin = AdminClient(conf(b, "admin", "admin-secret"))
    assert len(admin.describe_acls(everything).result(TIMEOUT)) == len(bindings)
    cc = conf(b, "usercc", "cc-secret")
    assert produce_error(cc, "Topic_Four") is None

    # at once on an open connection: a producer connected before the delete is refused after it
    p = Producer({**cc, "message.timeout.ms": 10000})
    errs = []
    p.produce("Topic_Four", b"before", on_delivery=lambda e, m: errs.append(e))
    p.flush(15)
    assert errs == [None]
    cc_write = AclBindingFilter(ResourceType.TOPIC, "Topic_Four", ResourcePatternType.LITERAL,
                                "User:usercc", "*", AclOperation.WRITE, AclPermissionType.ALLOW)
    deleted = admin.delete_acls([cc_write])[cc_write].result(TIMEOUT)
    assert len(deleted) == 1
    p.produce("Topic_Four", b"after", on_delivery=lambda e, m: errs.append(e))
    p.flush(15)
    assert errs[1] is not None and errs[1].code() == err.TOPIC_AUTHORIZATION_FAILED


def test_deny_wins_and_prefixed_patterns(broker_factory):
    b = broker_factory(overrides=SECURED)
    admin = AdminClient(conf(b, "admin", "admin-secret"))
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in ("logs-app", "logs-secret")]).values():
        f.result(TIMEOUT)
    acls = [
        AclBinding(ResourceType.TOPIC, "logs-", ResourcePatternType.PREFIXED, "User:usercc", "*",
                   AclOperation.WRITE, AclPermissionType.ALLOW),
        AclBinding(ResourceType.TOPIC, "logs-secret", ResourcePatternType.LITERAL, "User:usercc",
                   "*", AclOperation.ALL, AclPermissionType.DENY),
    ]
    for f in admin.create_acls(acls).values():
        f.result(TIMEOUT)
    cc = conf(b, "usercc", "cc-secret")
    assert produce_error(cc, "logs-app") is None
    assert produce_error(cc, "logs-secret") == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_describe_and_delete_groups_answer_each_group(broker_factory):
    """DescribeGroups and DeleteGroups refuse only the groups the principal may not touch; the
    others in the same request are answered (Kafka's per-group answers)."""
    b = broker_factory(overrides=SECURED)
    admin = AdminClient(conf(b, "admin", "admin-secret"))
    acls = [
        AclBinding(ResourceType.GROUP, g, ResourcePatternType.LITERAL, "User:usercc", "*", o,
                   AclPermissionType.ALLOW)
        for g in ("mine", "mine-too")
        for o in (AclOperation.DESCRIBE, AclOperation.DELETE)
    ]
    for f in admin.create_acls(acls).values():
        f.result(TIMEOUT)
    cc = AdminClient(conf(b, "usercc", "cc-secret"))
    futures = cc.describe_consumer_groups(["mine", "theirs"], request_timeout=TIMEOUT)
    assert futures["mine"].result(TIMEOUT).group_id == "mine"
    with pytest.raises(KafkaException) as e:
        futures["theirs"].result(TIMEOUT)
    assert e.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    futures = cc.delete_consumer_groups(["mine-too", "theirs"], request_timeout=TIMEOUT)
    with pytest.raises(KafkaException) as e:
        futures["theirs"].result(TIMEOUT)
    assert e.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    # an empty group that does not exist: Kafka's GROUP_ID_NOT_FOUND, not an authorization error
    with pytest.raises(KafkaException) as e:
        futures["mine-too"].result(TIMEOUT)
    assert e.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND


def test_acl_apis_without_an_authorizer(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    acl = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:u", "*",
                     AclOperation.READ, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as e:
        admin.create_acls([acl])[acl].result(TIMEOUT)
    assert e.value.args[0].code() == KafkaError.SECURITY_DISABLED


def test_certificate_principals_get_their_acls(broker_factory, tmp_path):
    """Mutual TLS: the certificate's subject, mapped by ssl.principal.mapping.rules, is the
    principal ACLs name (the seed's User:usercc)."""
    ca = CA(tmp_path / "certs")
    b = broker_factory(overrides=[
        "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
        f"ssl.keystore.location={ca.server().both}",
        "ssl.client.auth=required",
        f"ssl.truststore.location={ca.path}",
        "ssl.principal.mapping.rules=RULE:^CN=([^,]*),O=lab$/$1/,DEFAULT",
        "authorizer.class.name=StandardAuthorizer",
        "super.users=User:admin",
    ])
    ssl = f"127.0.0.1:{b.listeners['SSL'][1]}"

    def client(stem, cn, org="lab"):
        c = ca.client(stem, cn, org=org)
        return {"bootstrap.servers": ssl, "security.protocol": "SSL",
                "ssl.ca.location": str(ca.path), "ssl.certificate.location": str(c.cert),
                "ssl.key.location": str(c.key)}

    admin = AdminClient(client("admin", "admin"))
    for f in admin.create_topics([NewTopic("certs-topic", 1, 1)]).values():
        f.result(TIMEOUT)
    acl = AclBinding(ResourceType.TOPIC, "certs-topic", ResourcePatternType.LITERAL,
                     "User:usercc", "*", AclOperation.WRITE, AclPermissionType.ALLOW)
    admin.create_acls([acl])[acl].result(TIMEOUT)
    assert produce_error(client("usercc", "usercc"), "certs-topic") is None
    # same CN from another organisation: the rule does not match, the principal is the full DN
    assert (produce_error(client("usercc-other", "usercc", org="elsewhere"), "certs-topic")
            == KafkaError.TOPIC_AUTHORIZATION_FAILED)
    # and on the PLAINTEXT listener nobody is anyone: User:ANONYMOUS has no ACLs
    plain = {"bootstrap.servers": b.bootstrap}
    assert produce_error(plain, "certs-topic") == KafkaError.TOPIC_AUTHORIZATION_FAILED


@pytest.fixture
def acl_cluster(request, tmp_path):
    yield from managed_cluster(request, tmp_path, overrides=[
        "authorizer.class.name=StandardAuthorizer",
        # brokers fetch from each other as User:ANONYMOUS over the PLAINTEXT listener
        "super.users=User:ANONYMOUS;User:admin",
        "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        JAAS,
    ])


def test_acls_are_replicated_in_a_cluster(acl_cluster):
    c = acl_cluster
    admin = AdminClient({"bootstrap.servers": c.brokers[1].bootstrap})
    for f in admin.create_topics([NewTopic("replicated-acl", 1, 3)]).values():
        f.result(TIMEOUT)
    acl = AclBinding(ResourceType.TOPIC, "replicated-acl", ResourcePatternType.LITERAL,
                     "User:usercc", "*", AclOperation.WRITE, AclPermissionType.ALLOW)
    admin.create_acls([acl])[acl].result(TIMEOUT)
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    for i, b in c.brokers.items():
        a = AdminClient({"bootstrap.servers": b.bootstrap})
        deadline = time.monotonic() + TIMEOUT
        while len(a.describe_acls(everything).result(TIMEOUT)) != 1:
            assert time.monotonic() < deadline, f"broker {i} never saw the ACL"
            time.sleep(0.2)
    assert produce_error(conf(c.brokers[3], "usercc", "cc-secret"), "replicated-acl") is None
    assert (produce_error(conf(c.brokers[2], "other", "other-secret"), "replicated-acl")
            == KafkaError.TOPIC_AUTHORIZATION_FAILED)
