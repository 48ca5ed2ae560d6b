"""Client quotas (issue 17): producer_byte_rate / consumer_byte_rate on a client.id, set with
`sluice quota` (neither kafka-python 3.0's KafkaAdminClient nor confluent-kafka's AdminClient
has describe/alter client quotas, so the CLI is the admin client here; the protocol details
are in server/tests/quotas.rs).

A confluent-kafka producer and consumer whose client.id has a quota run side by side with
unthrottled ones in the same broker for a few seconds: the throttled one's throughput stays
near its quota (a loose bound: at most 3x, with the broker's quota windows shortened to 3 x
1 s so the padding of a new rate is small against the run), librdkafka sees the throttle
(throttle_cb and its statistics), and the unthrottled one moves many times more in the same
run. Throughputs are compared within one run, never against absolute speeds.
"""

import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from cluster_helpers import managed_cluster
from helpers import TIMEOUT, create_topic

REPO = Path(__file__).resolve().parents[2]
CLI = Path(os.environ.get("SLUICE_CLI_BIN", REPO / "target" / "debug" / "sluice"))
WINDOWS = ["quota.window.num=3", "quota.window.size.seconds=1"]
RUN_S = 4.0
VALUE = b"v" * 1000


def sluice(broker, *args):
    if not CLI.is_file():
        pytest.exit(f"sluice binary not found at {CLI}: set SLUICE_CLI_BIN", returncode=2)
    return subprocess.run(
        [str(CLI), "--bootstrap-server", broker.bootstrap, *args],
        capture_output=True, text=True, timeout=60,
    )


def ok(broker, *args):
    r = sluice(broker, *args)
    assert r.returncode == 0, f"sluice {' '.join(args)} exited {r.returncode}: {r.stderr}"
    return r.stdout


def metric(broker, name, **labels):
    text = urllib.request.urlopen(broker.http + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_cli_set_list_delete_and_restart(broker_factory):
    b = broker_factory()
    out = ok(b, "quota", "set", "--entity-type", "clients", "--entity-name", "app",
             "--add-config", "producer_byte_rate=1024,consumer_byte_rate=2048")
    assert out == "Completed updating config for client app.\n"
    ok(b, "quota", "set", "--entity-type", "users", "--entity-name", "alice",
       "--entity-type", "clients", "--entity-default", "--add-config", "request_percentage=12.5")
    ok(b, "quota", "set", "--entity-type", "clients", "--entity-name", "<default>",
       "--add-config", "producer_byte_rate=500")
    listing = ok(b, "quota", "list")
    assert listing.splitlines() == [
        "Quota configs for the default client-id are producer_byte_rate=500.0",
        "Quota configs for client-id 'app' are consumer_byte_rate=2048.0, producer_byte_rate=1024.0",
        "Quota configs for user-principal 'alice', the default client-id are request_percentage=12.5",
    ]
    # a type without a name: any name of that type, entities of only that type
    assert len(ok(b, "quota", "list", "--entity-type", "clients").splitlines()) == 2
    assert json.loads(ok(b, "--output", "json", "quota", "list", "--entity-type", "users",
                         "--entity-name", "alice", "--entity-type", "clients",
                         "--entity-default"))[0]["values"] == [["request_percentage", 12.5]]
    # the broker's refusals: one line, exit code 1, Kafka's message
    for config, message in [
        ("bogus=1", "Invalid configuration key bogus"),
        ("producer_byte_rate=10.5", "producer_byte_rate cannot be a fractional value."),
        ("consumer_byte_rate=0", "Quota consumer_byte_rate must be greater than 0"),
    ]:
        r = sluice(b, "quota", "set", "--entity-type", "clients", "--entity-name", "x",
                   "--add-config", config)
        assert r.returncode == 1, r
        assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    # usage errors never reach the broker
    r = sluice(b, "quota", "set", "--entity-type", "clients", "--add-config", "producer_byte_rate=1")
    assert r.returncode == 2 and "--entity-name or --entity-default" in r.stderr, r.stderr
    # --validate-only changes nothing
    ok(b, "quota", "set", "--entity-type", "clients", "--entity-name", "v",
       "--add-config", "producer_byte_rate=7", "--validate-only")
    assert ok(b, "quota", "list", "--entity-type", "clients", "--entity-name", "v") == ""
    # delete one key, then every key of an entity
    ok(b, "quota", "delete", "--entity-type", "clients", "--entity-name", "app",
       "--delete-config", "producer_byte_rate")
    ok(b, "quota", "delete", "--entity-type", "clients", "--entity-default")
    after = ok(b, "quota", "list")
    assert after.splitlines() == [
        "Quota configs for client-id 'app' are consumer_byte_rate=2048.0",
        "Quota configs for user-principal 'alice', the default client-id are request_percentage=12.5",
    ]
    # durable
    b.stop()
    b.start()
    assert ok(b, "quota", "list") == after


def produce_for(p, topic, seconds, stats):
    """Produces VALUE as fast as `p` takes it for `seconds`; returns value bytes acked within
    that time."""
    acked = [0]
    deadline = time.monotonic() + seconds

    def on_delivery(err, msg):
        if err is None and time.monotonic() <= deadline:
            acked[0] += len(msg.value())

    while time.monotonic() < deadline:
        try:
            p.produce(topic, VALUE, on_delivery=on_delivery)
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    p.poll(0.1)
    p.purge()
    p.flush(5)
    return acked[0]


def test_throttled_producer_is_held_near_its_quota(broker_factory):
    b = broker_factory(overrides=WINDOWS)
    create_topic(b.bootstrap, "q-prod", 1)
    quota = 100_000
    ok(b, "quota", "set", "--entity-type", "clients", "--entity-name", "slow-producer",
       "--add-config", f"producer_byte_rate={quota}")
    throttles = []
    stats = []

    def make(cid, **extra):
        conf = {
            "bootstrap.servers": b.bootstrap, "client.id": cid, "linger.ms": 5,
            "queue.buffering.max.messages": 5000, "statistics.interval.ms": 500,
            # requests small against the quota times its windows (as Java's 16 kB default)
            "batch.size": 16384,
        }
        conf.update(extra)
        return Producer(conf)

    slow = make("slow-producer",
                throttle_cb=lambda e: throttles.append(e.throttle_time),
                stats_cb=lambda s: stats.append(json.loads(s)))
    fast = make("fast-producer")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("fast", produce_for(fast, "q-prod", RUN_S, None)))
    t.start()
    result["slow"] = produce_for(slow, "q-prod", RUN_S, stats)
    t.join(TIMEOUT)
    slow_rate = result["slow"] / RUN_S
    print(f"quota {quota} B/s: throttled {slow_rate:.0f} B/s, unthrottled {result['fast'] / RUN_S:.0f} B/s")
    assert result["slow"] > 0, "the throttled producer still makes progress"
    assert slow_rate <= 3 * quota, f"{slow_rate:.0f} B/s against a {quota} B/s quota"
    assert result["fast"] > 3 * result["slow"], result
    assert throttles and max(throttles) > 0, "throttle_cb saw throttle_time_ms"
    seen = [br["throttle"]["cnt"] for s in stats for br in s["brokers"].values()
            if br.get("nodeid", -1) >= 0]
    assert seen and max(seen) > 0, "librdkafka's statistics count throttled responses"
    assert metric(b, "sluice_quota_entity_throttled_total", quota="producer_byte_rate",
                  client_id="slow-producer") > 0
    assert metric(b, "sluice_quota_entity_throttled_total", client_id="fast-producer") == 0


def test_throttled_consumer_is_held_near_its_quota(broker_factory):
    b = broker_factory(overrides=WINDOWS)
    create_topic(b.bootstrap, "q-cons", 1)
    # batches small against the quota's window: a fetch returns at least one whole batch
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5, "batch.size": 16384})
    n = 4000  # 4 MB
    for _ in range(n):
        p.produce("q-cons", VALUE)
        p.poll(0)
    assert p.flush(TIMEOUT) == 0
    quota = 100_000
    ok(b, "quota", "set", "--entity-type", "clients", "--entity-name", "slow-consumer",
       "--add-config", f"consumer_byte_rate={quota}")
    throttles = []

    def make(cid, **extra):
        conf = {
            "bootstrap.servers": b.bootstrap, "client.id": cid, "group.id": cid,
            "enable.auto.commit": False,
        }
        conf.update(extra)
        c = Consumer(conf)
        c.assign([TopicPartition("q-cons", 0, 0)])
        return c

    # one response must fit the quota's padded window (2 s here) to be let out
    slow = make("slow-consumer", throttle_cb=lambda e: throttles.append(e.throttle_time),
                **{"fetch.max.bytes": 65536, "max.partition.fetch.bytes": 65536,
                   "message.max.bytes": 65536, "queued.max.messages.kbytes": 256})
    fast = make("fast-consumer")
    got = {"slow": 0, "fast": 0}
    deadline = time.monotonic() + RUN_S
    while time.monotonic() < deadline:
        for name, c in (("slow", slow), ("fast", fast)):
            for m in c.consume(500, 0.02):
                if m.error() is None:
                    got[name] += len(m.value())
    slow.close()
    fast.close()
    slow_rate = got["slow"] / RUN_S
    print(f"quota {quota} B/s: throttled {slow_rate:.0f} B/s, unthrottled {got['fast'] / RUN_S:.0f} B/s")
    assert got["slow"] > 0, "the throttled consumer still makes progress"
    assert slow_rate <= 3 * quota, f"{slow_rate:.0f} B/s against a {quota} B/s quota"
    assert got["fast"] > 3 * got["slow"], got
    assert throttles and max(throttles) > 0, "throttle_cb saw throttle_time_ms"
    assert metric(b, "sluice_quota_entity_throttled_total", quota="consumer_byte_rate",
                  client_id="slow-consumer") > 0


JAAS = (
    "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
    'user_admin="admin-secret" user_alice="alice-secret";'
)
SECURED = [
    "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
    JAAS,
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users=User:admin",
    *WINDOWS,
]


def as_user(b, user, *args):
    port = b.listeners["SASL_PLAINTEXT"][1]
    return subprocess.run(
        [str(CLI), "--bootstrap-server", f"127.0.0.1:{port}",
         "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=PLAIN",
         "-X", f"sasl.username={user}", "-X", f"sasl.password={user}-secret", *args],
        capture_output=True, text=True, timeout=60,
    )


def test_quota_apis_need_cluster_config_acls_and_user_quotas_apply(broker_factory):
    b = broker_factory(overrides=SECURED)
    # alice has no ACLs: both APIs are refused on the cluster
    r = as_user(b, "alice", "quota", "list")
    assert r.returncode == 1 and "ClusterAuthorizationFailed" in r.stderr, r.stderr
    r = as_user(b, "admin", "acl", "add", "--allow-principal", "User:alice", "--cluster",
                "--operation", "DescribeConfigs")
    assert r.returncode == 0, r.stderr
    r = as_user(b, "admin", "acl", "add", "--allow-principal", "User:alice", "--topic", "uq",
                "--operation", "Write", "--operation", "Create", "--operation", "Describe")
    assert r.returncode == 0, r.stderr
    # DESCRIBE_CONFIGS lets her list, not alter (ALTER_CONFIGS)
    assert as_user(b, "alice", "quota", "list").returncode == 0
    r = as_user(b, "alice", "quota", "set", "--entity-type", "users", "--entity-name", "alice",
                "--add-config", "producer_byte_rate=50000")
    assert r.returncode == 1 and "ClusterAuthorizationFailed" in r.stderr, r.stderr
    r = as_user(b, "admin", "quota", "set", "--entity-type", "users", "--entity-name", "alice",
                "--add-config", "producer_byte_rate=50000")
    assert r.returncode == 0, r.stderr
    assert as_user(b, "alice", "quota", "list").stdout == (
        "Quota configs for user-principal 'alice' are producer_byte_rate=50000.0\n"
    )
    # the user quota applies to alice's SASL connections whatever their client.id
    throttles = []
    p = Producer({
        "bootstrap.servers": f"127.0.0.1:{b.listeners['SASL_PLAINTEXT'][1]}",
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
        "sasl.username": "alice", "sasl.password": "alice-secret",
        "client.id": "any-client", "linger.ms": 5, "batch.size": 16384,
        "throttle_cb": lambda e: throttles.append(e.throttle_time),
    })
    for _ in range(300):
        p.produce("uq", VALUE)
        p.poll(0)
    assert p.flush(TIMEOUT) == 0
    assert throttles and max(throttles) > 0, "alice's producer was throttled"
    assert metric(b, "sluice_quota_entity_throttled_total", quota="producer_byte_rate",
                  user="alice", client_id="") > 0


@pytest.fixture
def quota_cluster(request, tmp_path):
    yield from managed_cluster(request, tmp_path, overrides=WINDOWS)


def test_quotas_are_replicated_and_enforced_in_a_cluster(quota_cluster):
    c = quota_cluster
    ok(c.brokers[1], "quota", "set", "--entity-type", "clients", "--entity-name", "c-slow",
       "--add-config", "producer_byte_rate=50000")
    want = "Quota configs for client-id 'c-slow' are producer_byte_rate=50000.0\n"
    for i, b in c.brokers.items():
        deadline = time.monotonic() + TIMEOUT
        while ok(b, "quota", "list") != want:
            assert time.monotonic() < deadline, f"broker {i} never listed the quota"
            time.sleep(0.2)
    # the leader enforces it (quotas are per broker: one partition puts all bytes on one)
    a_broker = c.brokers[2]
    create_topic(a_broker.bootstrap, "cq", 1)
    throttles = []
    p = Producer({
        "bootstrap.servers": a_broker.bootstrap, "client.id": "c-slow", "linger.ms": 5,
        "batch.size": 16384, "throttle_cb": lambda e: throttles.append(e.throttle_time),
    })
    for _ in range(300):
        p.produce("cq", VALUE)
        p.poll(0)
    assert p.flush(TIMEOUT) == 0
    assert throttles and max(throttles) > 0, "throttled on the partitions' leaders"
    # a restarted broker has them from its image
    c.brokers[3].stop()
    c.brokers[3].start()
    deadline = time.monotonic() + TIMEOUT
    while ok(c.brokers[3], "quota", "list") != want:
        assert time.monotonic() < deadline, "the restarted broker lost the quota"
        time.sleep(0.2)
