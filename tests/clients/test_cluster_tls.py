"""Inter-broker TLS (issue 14): a cluster whose `inter.broker.listener.name` is an SSL listener
with `ssl.client.auth=required`. Followers fetch from their leaders over TLS, presenting their own
broker certificates and checking the leader's names its registered host, so acks=all on RF 3 is
acknowledged, and a leader failover keeps everything acknowledged. A broker whose certificate
comes from another CA cannot replicate: it never joins the ISR. Clients use the PLAINTEXT
listener (Metadata answers with the listener a client came in on)."""

import pytest

from certs import CA
from cluster_helpers import managed_cluster, partition_view
from confluent_kafka.admin import NewTopic

from helpers import admin, consume, produce_all, producer
from test_cluster import JOIN_TIMEOUT, VOTERS, create_topics, replicas_in_sync, wait_until

LISTENERS = [
    "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL",
    "inter.broker.listener.name=SSL",
    "ssl.keystore.type=PEM",
    "ssl.client.auth=required",
    # a follower that does not fetch leaves the ISR after 3 s (Kafka's default is 30 s)
    "replica.lag.time.max.ms=3000",
]


def broker_keys(ca, node_id):
    cert = ca.broker(f"broker-{node_id}", f"broker-{node_id}")
    return [f"ssl.keystore.location={cert.both}", f"ssl.truststore.location={ca.path}"]


@pytest.fixture
def tls_cluster(request, tmp_path):
    """Brokers 1-3, each with its own certificate from one CA (a broker added later gets one
    too, unless its own overrides name other files)."""
    ca = CA(tmp_path / "ca", name="cluster CA")

    def setup(c):
        add = c.add

        def add_with_keys(node_id, start=True, overrides=(), advertised=None):
            return add(node_id, start, [*broker_keys(ca, node_id), *overrides], advertised)

        c.add = add_with_keys

    yield from managed_cluster(request, tmp_path, overrides=LISTENERS, setup=setup)


def test_replication_over_tls_with_broker_certificates(tls_cluster):
    c = tls_cluster
    create_topics(c.bootstrap(), [("secure", 2, 3)])
    a = admin(c.bootstrap())
    wait_until(
        "secure in sync over TLS",
        lambda: replicas_in_sync(a.list_topics(timeout=10), "secure", 2, 3),
        JOIN_TIMEOUT,
    )
    vals = [f"s{i}".encode() for i in range(200)]
    d = produce_all(producer(c.bootstrap(), acks="all"), "secure", vals, partition=0)
    assert len(d.ok) == 200 and not d.failed
    leader = partition_view(c.brokers[1], "secure")[0]["leader"]

    # the followers had everything acknowledged: a failover loses none of it
    c.brokers[leader].kill()
    survivors = [i for i in VOTERS if i != leader]

    def moved():
        p = partition_view(c.brokers[survivors[0]], "secure")[0]
        return p if p["leader"] in survivors else None

    wait_until("a new leader for secure-0", moved, 30)
    more = [f"t{i}".encode() for i in range(50)]
    d = produce_all(producer(c.bootstrap(exclude=(leader,)), acks="all"), "secure", more, partition=0)
    assert len(d.ok) == 50 and not d.failed, "the two survivors keep acks=all going over TLS"
    got = consume(c.bootstrap(exclude=(leader,)), "secure", [0])
    assert [r.value for r in got] == vals + more


def test_a_broker_with_a_foreign_certificate_cannot_replicate(tls_cluster, tmp_path):
    c = tls_cluster
    rogue = CA(tmp_path / "rogue", name="rogue CA")
    cert = rogue.broker("broker-4", "broker-4")
    b4 = c.add(4, overrides=[
        f"ssl.keystore.location={cert.both}",
        f"ssl.truststore.location={rogue.path}",
    ])
    c.wait_registered([*VOTERS, 4])
    a = admin(c.bootstrap())
    f = a.create_topics([NewTopic("guarded", 1, replica_assignment=[[1, 2, 4]])])
    f["guarded"].result(30)
    wait_until(
        "broker 2 in guarded-0's ISR",
        lambda: 2 in partition_view(c.brokers[1], "guarded")[0]["isr"],
        JOIN_TIMEOUT,
    )
    produce_all(producer(c.bootstrap(), acks=1), "guarded", [b"x"] * 20, partition=0)
    # broker 4 cannot fetch, and says why
    wait_until(
        "broker 4 to report the failed handshake",
        lambda: "inter-broker TLS" in b4.log_text() or None,
        JOIN_TIMEOUT,
    )
    # a new partition's ISR starts with every replica; the leader drops the one that never
    # fetches once replica.lag.time.max.ms has passed, and it does not come back
    wait_until(
        "broker 4 out of guarded-0's ISR",
        lambda: 4 not in partition_view(c.brokers[1], "guarded")[0]["isr"] or None,
        JOIN_TIMEOUT,
    )
    produce_all(producer(c.bootstrap(), acks="all"), "guarded", [b"y"] * 20, partition=0)
    p = partition_view(c.brokers[1], "guarded")[0]
    assert sorted(p["isr"]) == [1, 2], p
