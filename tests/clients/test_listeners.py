"""Several listeners on one broker (Kafka's `listeners`, `listener.security.protocol.map`,
`advertised.listeners`): each is served, and Metadata, FindCoordinator and DescribeCluster give
clients the endpoints of the listener they came in on, alone and in a cluster."""

import subprocess
import time

import kafka
import pytest
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

from cluster_helpers import managed_cluster
from conftest import server_binary
from helpers import TIMEOUT, admin, consume, create_topic, produce_all, producer, values
from test_cluster import free_ports

TWO_LISTENERS = [
    "listeners=PLAINTEXT://127.0.0.1:0,EXTERNAL://127.0.0.1:0",
    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT",
]


def brokers_seen(bootstrap):
    """{node id: "host:port"} in confluent-kafka's Metadata from `bootstrap`."""
    md = admin(bootstrap).list_topics(timeout=TIMEOUT)
    return {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}


def test_each_listener_advertises_itself(broker_factory):
    (ext_port,) = free_ports(1)
    b = broker_factory(
        overrides=[
            "listeners=PLAINTEXT://127.0.0.1:0,EXTERNAL://127.0.0.1:%d" % ext_port,
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT",
            "advertised.listeners=EXTERNAL://localhost:%d" % ext_port,
        ]
    )
    assert set(b.listeners) == {"PLAINTEXT", "EXTERNAL"}
    plain = f"127.0.0.1:{b.listeners['PLAINTEXT'][1]}"
    external = f"localhost:{ext_port}"
    assert brokers_seen(plain) == {0: plain}
    assert brokers_seen(external) == {0: external}

    # produce through one listener, read back through the other, and join a group through
    # the external one (FindCoordinator must answer with its endpoint)
    create_topic(external, "two-doors", partitions=2)
    sent = [f"m{i}".encode() for i in range(200)]
    produce_all(producer(external), "two-doors", sent)
    assert sorted(values(consume(plain, "two-doors", [0, 1]))) == sorted(sent)
    c = kafka.KafkaConsumer(
        "two-doors",
        bootstrap_servers=external,
        group_id="via-external",
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(TIMEOUT * 1000),
    )
    got = []
    try:
        for m in c:
            got.append(m.value)
            if len(got) == len(sent):
                break
        c.commit()
    finally:
        c.close()
    assert sorted(got) == sorted(sent)
    a = admin(plain)  # must outlive its futures
    group = a.describe_consumer_groups(["via-external"])["via-external"].result(TIMEOUT)
    assert group.coordinator.port == b.listeners["PLAINTEXT"][1]

    # the broker's configs describe both listeners
    res = ConfigResource(ResourceType.BROKER, "0")
    entries = a.describe_configs([res])[res].result(TIMEOUT)
    assert entries["listeners"].value == (
        f"PLAINTEXT://127.0.0.1:0,EXTERNAL://127.0.0.1:{ext_port}"
    )
    assert entries["advertised.listeners"].value == (
        f"{plain.join(['PLAINTEXT://', ''])},EXTERNAL://localhost:{ext_port}"
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["listeners=CLIENT://127.0.0.1:0"], "CLIENT has no security protocol"),
        (
            ["listeners=PLAINTEXT://127.0.0.1:0", "advertised.listeners=OTHER://h:1"],
            "no listener is named OTHER",
        ),
        (["listener.security.protocol.map=A:TLS"], "unknown security protocol"),
        (["listeners=PLAINTEXT://127.0.0.1:0,PLAINTEXT://127.0.0.1:0"], "listed twice"),
    ],
)
def test_bad_listener_settings_are_refused_with_the_key(broker_factory, overrides, message):
    b = broker_factory(overrides=overrides, start=False)
    r = subprocess.run(
        [b.binary, "--data-dir", str(b.data_dir), "--cores", "1",
         *[a for kv in overrides for a in ("--override", kv)]],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("sluice-server:")]
    assert len(lines) == 1 and message in lines[0], r.stderr


@pytest.fixture
def two_listener_cluster(request, tmp_path):
    yield from managed_cluster(request, tmp_path, overrides=TWO_LISTENERS)


def test_a_cluster_registers_every_listener(two_listener_cluster):
    c = two_listener_cluster
    external = {i: f"127.0.0.1:{b.listeners['EXTERNAL'][1]}" for i, b in c.brokers.items()}
    plain = {i: b.bootstrap for i, b in c.brokers.items()}
    assert set(external.values()).isdisjoint(plain.values())

    def agrees():
        return all(
            brokers_seen(external[i]) == external and brokers_seen(plain[i]) == plain
            for i in c.brokers
        )

    deadline = time.monotonic() + TIMEOUT
    while not agrees():
        assert time.monotonic() < deadline, (
            f"metadata by listener: {[brokers_seen(e) for e in external.values()]}"
        )
        time.sleep(0.2)
    # a replicated topic works through the external listener (replication runs over PLAINTEXT)
    bootstrap = ",".join(external.values())
    a = admin(bootstrap)
    a.create_topics([NewTopic("ext-rf3", 3, 3)])["ext-rf3"].result(TIMEOUT)
    sent = [f"r{i}".encode() for i in range(300)]
    produce_all(producer(bootstrap, acks="all"), "ext-rf3", sent)
    assert sorted(values(consume(bootstrap, "ext-rf3", [0, 1, 2]))) == sorted(sent)
