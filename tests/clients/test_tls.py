"""SSL listeners with real clients: confluent-kafka, kafka-python and kcat over TLS (produce,
consume from the hot tail and from disk, consumer groups), mutual TLS (required and requested
client certificates; untrusted and expired ones refused), encrypted keys, certificate reload
without a restart, and hostile connections (plain text, garbage, stalled handshakes) on a TLS
port that cannot stop other clients. Certificates are made at test time (certs.py)."""

import socket
import struct
import subprocess
import time

import kafka
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from certs import CA
from helpers import (
    TIMEOUT,
    consume,
    create_topic,
    kp_consume,
    produce_all,
    producer,
    values,
)


def ssl_conf(ca, client=None):
    """librdkafka settings for an SSL client trusting `ca` (and presenting `client`)."""
    conf = {"security.protocol": "SSL", "ssl.ca.location": str(ca.path)}
    if client is not None:
        conf["ssl.certificate.location"] = str(client.cert)
        conf["ssl.key.location"] = str(client.key)
    return conf


def tls_overrides(server, *extra):
    return [
        "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={server.both}",
        *extra,
    ]


def ssl_bootstrap(b):
    return f"127.0.0.1:{b.listeners['SSL'][1]}"


def metadata_ok(bootstrap, conf, timeout=10):
    """True when a confluent-kafka admin client with `conf` gets Metadata; False on failure."""
    a = AdminClient({"bootstrap.servers": bootstrap, **conf})
    try:
        a.list_topics(timeout=timeout)
        return True
    except KafkaException:
        return False


def ssl_round_trip(bootstrap, ca, topic, n=50, client=None):
    """Produces `n` messages over SSL with confluent-kafka and reads them back."""
    sent = [f"{topic}-{i}".encode() for i in range(n)]
    produce_all(producer(bootstrap, **_underscored(ssl_conf(ca, client))), topic, sent)
    got = values(consume(bootstrap, topic, [0], **_underscored(ssl_conf(ca, client))))
    assert got == sent


def _underscored(conf):
    # helpers.producer/consumer take librdkafka names with '_' for '.'
    return {k.replace(".", "_"): v for k, v in conf.items()}


@pytest.fixture
def ca(tmp_path):
    return CA(tmp_path / "certs")


def test_three_clients_over_ssl(broker_factory, ca):
    # a small hot cache, so that most fetches read the segment files (the copy path under TLS)
    b = broker_factory(
        overrides=tls_overrides(ca.server(), "sluice.hot.cache.shard.bytes=65536")
    )
    boot = ssl_bootstrap(b)
    a = AdminClient({"bootstrap.servers": boot, **ssl_conf(ca)})
    brokers = a.list_topics(timeout=TIMEOUT).brokers
    assert [f"{x.host}:{x.port}" for x in brokers.values()] == [boot], "the SSL endpoint"
    a.create_topics([NewTopic("tls", 2, 1)])["tls"].result(TIMEOUT)
    sent = [(b"k%d" % i, b"v" * 200 + b"%d" % i) for i in range(3000)]
    p = producer(boot, **_underscored(ssl_conf(ca)))
    produce_all(p, "tls", [v for _, v in sent], keys=[k for k, _ in sent])

    # confluent-kafka, from disk
    got = consume(boot, "tls", [0, 1], **_underscored(ssl_conf(ca)))
    assert sorted(values(got)) == sorted(v for _, v in sent)

    # kafka-python in a consumer group
    c = kafka.KafkaConsumer(
        "tls",
        bootstrap_servers=boot,
        security_protocol="SSL",
        ssl_cafile=str(ca.path),
        group_id="tls-group",
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(TIMEOUT * 1000),
    )
    n = 0
    try:
        for _ in c:
            n += 1
            if n == len(sent):
                break
        c.commit()
    finally:
        c.close()
    assert n == len(sent)
    offsets = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions("tls-group")])[
        "tls-group"
    ].result(TIMEOUT)
    assert sum(tp.offset for tp in offsets.topic_partitions) == len(sent)

    # kcat produces and consumes over SSL
    lines = [f"kcat {i}" for i in range(100)]
    kc = ["kcat", "-b", boot, "-X", "security.protocol=ssl", "-X", f"ssl.ca.location={ca.path}"]
    r = subprocess.run(
        kc + ["-P", "-t", "kcat-tls", "-p", "0"], input="\n".join(lines) + "\n",
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        kc + ["-C", "-t", "kcat-tls", "-o", "beginning", "-e", "-q"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == lines
    # and the PLAINTEXT listener still serves the same data
    assert len(consume(b.bootstrap, "kcat-tls", [0])) == len(lines)


def test_kafka_python_producer_over_ssl(broker_factory, ca):
    b = broker_factory(overrides=tls_overrides(ca.server()))
    boot = ssl_bootstrap(b)
    create_topic(b.bootstrap, "kp-tls")
    p = kafka.KafkaProducer(
        bootstrap_servers=boot, security_protocol="SSL", ssl_cafile=str(ca.path),
        enable_idempotence=False,
    )
    for i in range(100):
        p.send("kp-tls", value=b"kp%d" % i, partition=0)
    p.flush(TIMEOUT)
    p.close()
    got = kp_consume(b.bootstrap, "kp-tls", [0], 100)
    assert values(got) == [b"kp%d" % i for i in range(100)]


def api_versions_frame():
    """A v0 ApiVersions request, as a plain-text client sends first."""
    body = struct.pack(">hhih", 18, 0, 1, 4) + b"test"
    return struct.pack(">i", len(body)) + body


def test_hostile_connections_to_a_tls_port_cannot_stop_other_clients(broker_factory, ca):
    b = broker_factory(overrides=tls_overrides(ca.server()))
    host, port = "127.0.0.1", b.listeners["SSL"][1]
    # a plain-text Kafka client: refused at once (a TLS alert, then the connection closes)
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(api_versions_frame())
    start = time.monotonic()
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    assert time.monotonic() - start < 5
    assert not data.startswith(b"\x00\x00"), "no Kafka response over a TLS port"
    s.close()
    assert not metadata_ok(f"{host}:{port}", {"security.protocol": "PLAINTEXT"}, timeout=5)

    # stalled handshakes and garbage, then a real client alongside them
    stalled = [socket.create_connection((host, port), timeout=5) for _ in range(50)]
    for _ in range(5):
        g = socket.create_connection((host, port), timeout=5)
        try:
            g.sendall(b"\x16\x03\x01\xff\xff" + b"\xab" * 65536)
        except OSError:
            pass  # the broker may close it before all of it is written
        g.close()
    ssl_round_trip(ssl_bootstrap(b), ca, "alongside")
    # a stalled handshake is dropped after the handshake timeout (10 s)
    stalled[0].settimeout(20)
    t0 = time.monotonic()
    assert stalled[0].recv(1) == b""
    assert time.monotonic() - t0 < 15
    for s in stalled:
        s.close()


def test_mutual_tls_required(broker_factory, ca, tmp_path):
    b = broker_factory(
        overrides=tls_overrides(
            ca.server(), "ssl.client.auth=required", f"ssl.truststore.location={ca.path}"
        )
    )
    boot = ssl_bootstrap(b)
    good = ca.client("usercc", "usercc")
    ssl_round_trip(boot, ca, "mtls", client=good)
    # no certificate, an untrusted CA's, an expired one: each refused, quickly
    other = CA(tmp_path / "other", name="rogue CA").client("rogue", "rogue")
    expired = ca.client("old", "old", expired=True)
    for who, conf in [
        ("no certificate", ssl_conf(ca)),
        ("untrusted CA", ssl_conf(ca, other)),
        ("expired", ssl_conf(ca, expired)),
    ]:
        t0 = time.monotonic()
        assert not metadata_ok(boot, conf, timeout=5), f"{who} was let in"
        assert time.monotonic() - t0 < 6
    # the good client carries on, in a consumer group too
    ssl_round_trip(boot, ca, "mtls-after", client=good)
    from test_sasl import group_consume

    group_consume(boot, ssl_conf(ca, good), "mtls-after", "mtls-group", 50)
    # kafka-python presents a client certificate too
    p = kafka.KafkaProducer(
        bootstrap_servers=boot, security_protocol="SSL", ssl_cafile=str(ca.path),
        ssl_certfile=str(good.cert), ssl_keyfile=str(good.key), enable_idempotence=False,
    )
    for i in range(20):
        p.send("kp-mtls", value=b"%d" % i, partition=0)
    p.flush(TIMEOUT)
    p.close()
    assert len(consume(b.bootstrap, "kp-mtls", [0])) == 20


def test_requested_client_auth_lets_anonymous_clients_in(broker_factory, ca):
    b = broker_factory(
        overrides=tls_overrides(
            ca.server(), "ssl.client.auth=requested", f"ssl.truststore.location={ca.path}"
        )
    )
    boot = ssl_bootstrap(b)
    ssl_round_trip(boot, ca, "anon")
    ssl_round_trip(boot, ca, "named", client=ca.client("alice", "alice"))


def test_encrypted_key_and_wrong_password(broker_factory, ca):
    server = ca.server("locked", password="s3cret")
    assert b"ENCRYPTED PRIVATE KEY" in server.key.read_bytes()
    b = broker_factory(overrides=tls_overrides(server, "ssl.key.password=s3cret"))
    ssl_round_trip(ssl_bootstrap(b), ca, "locked")
    refused = run_refused(broker_factory, tls_overrides(server, "ssl.key.password=wrong"))
    assert "ssl.key.password" in refused


def test_cli_with_an_encrypted_client_key(broker_factory, ca):
    """The `sluice` CLI presents a client certificate whose key is an encrypted PKCS#8 one
    (ssl.key.password, as librdkafka takes it) to a listener that requires one; a wrong
    password is a one-line error naming the setting."""
    from test_cli import CLI

    b = broker_factory(
        overrides=tls_overrides(
            ca.server(), "ssl.client.auth=required", f"ssl.truststore.location={ca.path}"
        )
    )
    create_topic(b.bootstrap, "enc-key-topic")
    from cryptography.x509.oid import NameOID

    client = ca.issue("enc-client", [(NameOID.COMMON_NAME, "enc")], password="pw-123")
    assert b"ENCRYPTED PRIVATE KEY" in client.key.read_bytes()

    def cli(password):
        return subprocess.run(
            [
                str(CLI), "--bootstrap-server", ssl_bootstrap(b),
                "-X", "security.protocol=SSL", "-X", f"ssl.ca.location={ca.path}",
                "-X", f"ssl.certificate.location={client.cert}",
                "-X", f"ssl.key.location={client.key}",
                "-X", f"ssl.key.password={password}",
                "topic", "list",
            ],
            capture_output=True, text=True, timeout=60,
        )

    r = cli("pw-123")
    assert r.returncode == 0, r.stderr
    assert "enc-key-topic" in r.stdout
    r = cli("wrong")
    assert r.returncode != 0
    assert "ssl.key.password" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def run_refused(broker_factory, overrides):
    """Starts sluice-server with `overrides`, expects it to refuse; returns its one-line error."""
    b = broker_factory(overrides=overrides, start=False)
    r = subprocess.run(
        [b.binary, "--data-dir", str(b.data_dir), "--cores", "1",
         *[a for kv in overrides for a in ("--override", kv)]],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert r.returncode != 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("sluice-server:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_bad_tls_settings_stop_the_start(broker_factory, ca, tmp_path):
    server = ca.server()
    msg = run_refused(broker_factory, ["listeners=SSL://127.0.0.1:0"])
    assert "ssl.keystore.location" in msg
    msg = run_refused(broker_factory, tls_overrides(server, "ssl.client.auth=required"))
    assert "ssl.truststore.location" in msg
    missing = tmp_path / "nope.pem"
    msg = run_refused(
        broker_factory,
        ["listeners=SSL://127.0.0.1:0", f"ssl.keystore.location={missing}"],
    )
    assert str(missing) in msg
    msg = run_refused(broker_factory, tls_overrides(server, "ssl.keystore.type=JKS"))
    assert "PEM" in msg


def test_certificates_reload_without_a_restart(broker_factory, ca, tmp_path):
    server = ca.server()
    live = tmp_path / "live.pem"
    live.write_bytes(server.both.read_bytes())
    b = broker_factory(
        overrides=[
            "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
            f"ssl.keystore.location={live}",
        ]
    )
    boot = ssl_bootstrap(b)
    ssl_round_trip(boot, ca, "before")
    # renew the certificate from a new CA; new connections get it without a restart
    new_ca = CA(tmp_path / "new", name="renewed CA")
    live.write_bytes(new_ca.server("renewed").both.read_bytes())
    deadline = time.monotonic() + TIMEOUT
    while not metadata_ok(boot, ssl_conf(new_ca), timeout=3):
        assert time.monotonic() < deadline, "the renewed certificate was never served"
        time.sleep(0.5)
    assert not metadata_ok(boot, ssl_conf(ca), timeout=3), "the old certificate is still served"
    # a broken renewal keeps the last good certificate
    live.write_text("not a pem file")
    time.sleep(1.5)
    ssl_round_trip(boot, new_ca, "after")
    assert "keeping the previous ones" in b.log_text()
