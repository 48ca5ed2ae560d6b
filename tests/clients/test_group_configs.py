"""GROUP config resources (type 32, KIP-848's per-group configs) through DescribeConfigs,
IncrementalAlterConfigs and AlterConfigs (issue 16): confluent-kafka's AdminClient (librdkafka
sends ResourceType.GROUP as config resource 32) and kafka-python's ConfigResourceType.GROUP.
Defaults come from the broker's group.consumer.* settings, overrides are checked against its
min/max bounds (INVALID_CONFIG otherwise, and for unknown names), and survive a restart."""

import subprocess

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient

from helpers import TIMEOUT, admin

SESSION = "consumer.session.timeout.ms"
HEARTBEAT = "consumer.heartbeat.interval.ms"
DEFAULT = ConfigSource.DEFAULT_CONFIG.value  # 5
STATIC = ConfigSource.STATIC_BROKER_CONFIG.value  # 4
GROUP = ConfigSource.GROUP_CONFIG.value  # 8


def describe(a, group):
    """{name: (value, source, is_default, read_only, synonyms)} of a group's consumer.*
    configs (the share.* ones are tested in test_share_groups.py)."""
    (fut,) = a.describe_configs(
        [ConfigResource(ResourceType.GROUP, group)], request_timeout=TIMEOUT
    ).values()
    return {
        n: (e.value, int(e.source), e.is_default, e.is_read_only, sorted(e.synonyms))
        for n, e in fut.result(TIMEOUT).items()
        if n.startswith("consumer.")
    }


def values(a, group):
    return {n: v[0] for n, v in describe(a, group).items()}


def alter(a, group, *ops):
    """IncrementalAlterConfigs; None on success, else the error code."""
    entries = [
        ConfigEntry(name, value, incremental_operation=op) for name, value, op in ops
    ]
    (fut,) = a.incremental_alter_configs(
        [ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)],
        request_timeout=TIMEOUT,
    ).values()
    try:
        fut.result(TIMEOUT)
        return None
    except KafkaException as e:
        return e.args[0].code()


SET, DELETE, APPEND = AlterConfigOpType.SET, AlterConfigOpType.DELETE, AlterConfigOpType.APPEND


def test_describe_alter_validate_and_restart(broker):
    a = admin(broker.bootstrap)
    # a group with no overrides (that does not even exist): Kafka's defaults
    assert describe(a, "g1") == {
        SESSION: ("45000", DEFAULT, True, False, ["group.consumer.session.timeout.ms"]),
        HEARTBEAT: ("5000", DEFAULT, True, False, ["group.consumer.heartbeat.interval.ms"]),
    }

    assert alter(a, "g1", (SESSION, "50000", SET)) is None
    d = describe(a, "g1")
    assert d[SESSION] == (
        "50000", GROUP, False, False, [SESSION, "group.consumer.session.timeout.ms"]
    )
    assert d[HEARTBEAT] == (
        "5000", DEFAULT, True, False, ["group.consumer.heartbeat.interval.ms"]
    )
    assert values(a, "other") == {SESSION: "45000", HEARTBEAT: "5000"}

    # refused with INVALID_CONFIG, nothing changes
    bad = [
        (SESSION, "44999", SET),  # below group.consumer.min.session.timeout.ms
        (SESSION, "60001", SET),  # above group.consumer.max.session.timeout.ms
        (HEARTBEAT, "4999", SET),  # below group.consumer.min.heartbeat.interval.ms
        (HEARTBEAT, "15001", SET),  # above group.consumer.max.heartbeat.interval.ms
        (SESSION, "soon", SET),  # not an INT
        ("consumer.nope", "1", SET),  # unknown name
        ("share.session.timeout.ms", "45000", SET),  # a share group key sluice does not have
        (SESSION, "1", APPEND),  # not a LIST
    ]
    for op in bad:
        assert alter(a, "g1", op) == KafkaError.INVALID_CONFIG, op
    assert values(a, "g1") == {SESSION: "50000", HEARTBEAT: "5000"}

    assert alter(a, "g1", (HEARTBEAT, "6000", SET)) is None
    broker.restart()
    a = admin(broker.bootstrap)
    assert values(a, "g1") == {SESSION: "50000", HEARTBEAT: "6000"}

    # DELETE goes back to the default
    assert alter(a, "g1", (SESSION, None, DELETE)) is None
    d = describe(a, "g1")
    assert d[SESSION][:3] == ("45000", DEFAULT, True)
    assert d[HEARTBEAT][:3] == ("6000", GROUP, False)

    # the legacy AlterConfigs replaces the whole set
    (fut,) = a.alter_configs(
        [ConfigResource(ResourceType.GROUP, "g1", set_config={SESSION: "55000"})],
        request_timeout=TIMEOUT,
    ).values()
    fut.result(TIMEOUT)
    assert values(a, "g1") == {SESSION: "55000", HEARTBEAT: "5000"}
    (fut,) = a.alter_configs(
        [ConfigResource(ResourceType.GROUP, "g1", set_config={SESSION: "1"})],
        request_timeout=TIMEOUT,
    ).values()
    with pytest.raises(KafkaException) as e:
        fut.result(TIMEOUT)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert values(a, "g1") == {SESSION: "55000", HEARTBEAT: "5000"}

    # validate_only checks without storing
    (fut,) = a.incremental_alter_configs(
        [ConfigResource(ResourceType.GROUP, "g1", incremental_configs=[
            ConfigEntry(SESSION, "46000", incremental_operation=SET)
        ])],
        validate_only=True,
        request_timeout=TIMEOUT,
    ).values()
    fut.result(TIMEOUT)
    assert values(a, "g1")[SESSION] == "55000"


def test_broker_bounds_and_kafka_python(broker_factory):
    """The broker's group.consumer.* settings are the defaults (STATIC_BROKER_CONFIG) and the
    bounds; with a lower session minimum the heartbeat must still stay below the session."""
    b = broker_factory(
        overrides=[
            "group.consumer.min.session.timeout.ms=6000",
            "group.consumer.session.timeout.ms=30000",
        ]
    )
    a = admin(b.bootstrap)
    d = describe(a, "g")
    assert d[SESSION] == (
        "30000", STATIC, False, False, ["group.consumer.session.timeout.ms"]
    )
    assert d[HEARTBEAT][:2] == ("5000", DEFAULT)
    assert alter(a, "g", (SESSION, "5000", SET)) == KafkaError.INVALID_CONFIG  # < 6000
    # heartbeat (default 5000) must be below the session timeout
    assert alter(a, "g", (SESSION, "6000", SET)) is None
    assert alter(a, "g", (HEARTBEAT, "6000", SET)) == KafkaError.INVALID_CONFIG

    kp = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        res = kp.alter_configs(
            [KpConfigResource(ConfigResourceType.GROUP, "kp", configs={HEARTBEAT: "7000"})]
        )
        assert res == {"group": {"kp": "OK"}}
        every = kp.describe_configs(
            [KpConfigResource(ConfigResourceType.GROUP, "kp")], config_filter="all"
        )
        modified = kp.describe_configs([KpConfigResource(ConfigResourceType.GROUP, "kp")])
    finally:
        kp.close()
    got = {
        n: (c["value"], c["config_source"], c["config_type"], c["read_only"])
        for n, c in every["group"]["kp"].items()
        if n.startswith("consumer.")
    }
    assert got == {
        SESSION: ("30000", "STATIC_BROKER_CONFIG", "INT", False),
        HEARTBEAT: ("7000", "DYNAMIC_GROUP_CONFIG", "INT", False),
    }
    assert set(modified["group"]["kp"]) == {HEARTBEAT}
    assert values(a, "kp") == {SESSION: "30000", HEARTBEAT: "7000"}


def test_broker_refuses_inconsistent_group_bounds(broker_factory):
    """A default outside its own bounds stops the start with one line naming the keys, as
    Kafka's GroupCoordinatorConfig refuses it."""
    overrides = ["group.consumer.session.timeout.ms=30000"]  # below the 45000 minimum
    b = broker_factory(overrides=overrides, start=False)
    r = subprocess.run(
        [b.binary, "--data-dir", str(b.data_dir), "--cores", "1",
         *[a for kv in overrides for a in ("--override", kv)]],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("sluice-server:")]
    assert len(lines) == 1, r.stderr
    assert (
        "group.consumer.session.timeout.ms must be between "
        "group.consumer.min.session.timeout.ms and group.consumer.max.session.timeout.ms"
    ) in lines[0], r.stderr
