"""SASL listeners with real clients: PLAIN (JAAS users, or a user's SCRAM credential) over
SASL_PLAINTEXT, SCRAM-SHA-256 and -512 over SASL_SSL, credentials managed with
AlterUserScramCredentials / DescribeUserScramCredentials (durable, and replicated in a cluster),
v0 and v1 framing, nothing served before authentication, wrong passwords and unknown users
refused quickly while other clients carry on, and connections.max.reauth.ms (KIP-368)."""

import os
import socket
import struct
import subprocess
import time
from pathlib import Path

import kafka
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from certs import CA
from cluster_helpers import managed_cluster
from helpers import TIMEOUT, consume, produce_all, producer, values

REPO = Path(__file__).resolve().parents[2]
CLI = Path(os.environ.get("SLUICE_CLI_BIN", REPO / "target" / "debug" / "sluice"))

JAAS = (
    "listener.name.sasl_plaintext.plain.sasl.jaas.config="
    "org.apache.kafka.common.security.plain.PlainLoginModule required "
    'username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";'
)


def sasl_conf(protocol, mechanism, user, password, ca=None):
    conf = {
        "security.protocol": protocol,
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }
    if ca is not None:
        conf["ssl.ca.location"] = str(ca.path)
    return conf


def underscored(conf):
    return {k.replace(".", "_"): v for k, v in conf.items()}


def can_connect(bootstrap, conf, timeout=5):
    a = AdminClient({"bootstrap.servers": bootstrap, **conf})
    try:
        a.list_topics(timeout=timeout)
        return True
    except KafkaException:
        return False


def round_trip(bootstrap, conf, topic, n=100):
    sent = [f"{topic}-{i}".encode() for i in range(n)]
    produce_all(producer(bootstrap, **underscored(conf)), topic, sent)
    assert values(consume(bootstrap, topic, [0], **underscored(conf))) == sent


def group_consume(bootstrap, conf, topic, group, n):
    """Consumes `n` messages of `topic` in consumer group `group` and commits them."""
    c = Consumer({"bootstrap.servers": bootstrap, **conf, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    got = 0
    deadline = time.monotonic() + TIMEOUT
    try:
        c.subscribe([topic])
        while got < n:
            assert time.monotonic() < deadline, f"only {got} of {n} in group {group}"
            m = c.poll(0.5)
            if m is None:
                continue
            assert not m.error(), m.error()
            got += 1
        c.commit(asynchronous=False)
        committed = c.committed([TopicPartition(topic, 0)], timeout=TIMEOUT)
        assert committed[0].offset == n
    finally:
        c.close()


def listener(b, name):
    return f"127.0.0.1:{b.listeners[name][1]}"


def set_scram(bootstrap, user, password, mechanism=ScramMechanism.SCRAM_SHA_256, iterations=8192):
    a = AdminClient({"bootstrap.servers": bootstrap})
    info = ScramCredentialInfo(mechanism, iterations)
    up = UserScramCredentialUpsertion(user, info, password.encode())
    for f in a.alter_user_scram_credentials([up]).values():
        f.result(TIMEOUT)


def test_plain_over_sasl_plaintext_with_three_clients(broker_factory):
    b = broker_factory(
        overrides=["listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0", JAAS]
    )
    boot = listener(b, "SASL_PLAINTEXT")
    alice = sasl_conf("SASL_PLAINTEXT", "PLAIN", "alice", "alice-secret")
    round_trip(boot, alice, "plain-sasl")
    # kafka-python in a consumer group
    c = kafka.KafkaConsumer(
        "plain-sasl", bootstrap_servers=boot, security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN", sasl_plain_username="alice",
        sasl_plain_password="alice-secret", group_id="sasl-group",
        auto_offset_reset="earliest", consumer_timeout_ms=int(TIMEOUT * 1000),
    )
    got = []
    try:
        for m in c:
            got.append(m.value)
            if len(got) == 100:
                break
    finally:
        c.close()
    assert got == [f"plain-sasl-{i}".encode() for i in range(100)]
    # kcat
    kc = ["kcat", "-b", boot, "-X", "security.protocol=SASL_PLAINTEXT",
          "-X", "sasl.mechanism=PLAIN", "-X", "sasl.username=admin",
          "-X", "sasl.password=admin-secret"]
    r = subprocess.run(kc + ["-C", "-t", "plain-sasl", "-o", "beginning", "-e", "-q"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 100
    # wrong password and unknown user: refused quickly, alice carries on
    for who, conf in [
        ("wrong password", sasl_conf("SASL_PLAINTEXT", "PLAIN", "alice", "nope")),
        ("unknown user", sasl_conf("SASL_PLAINTEXT", "PLAIN", "mallory", "x")),
        ("no SASL at all", {"security.protocol": "PLAINTEXT"}),
        ("unoffered mechanism", sasl_conf("SASL_PLAINTEXT", "OAUTHBEARER", "a", "b")),
    ]:
        if who == "unoffered mechanism":
            conf["sasl.oauthbearer.config"] = "principal=a"
            conf["enable.sasl.oauthbearer.unsecure.jwt"] = True
            conf.pop("sasl.username")
            conf.pop("sasl.password")
        t0 = time.monotonic()
        assert not can_connect(boot, conf), f"{who} was let in"
        assert time.monotonic() - t0 < 6, who
    round_trip(boot, alice, "plain-after")
    assert "SASL authentication failed" in b.log_text()


def test_scram_over_sasl_ssl_durable_and_managed(broker_factory, tmp_path):
    ca = CA(tmp_path / "certs")
    server = ca.server()
    b = broker_factory(
        overrides=[
            "listeners=PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            f"ssl.keystore.location={server.both}",
            "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
        ]
    )
    admin_boot = b.bootstrap  # the PLAINTEXT listener manages users
    set_scram(admin_boot, "usercc", "cc-pass", ScramMechanism.SCRAM_SHA_256)
    set_scram(admin_boot, "usercc", "cc-pass-512", ScramMechanism.SCRAM_SHA_512, 4096)
    set_scram(admin_boot, "bob", "bob-pass", ScramMechanism.SCRAM_SHA_512)
    a = AdminClient({"bootstrap.servers": admin_boot})
    desc = a.describe_user_scram_credentials().result(TIMEOUT)
    got = {
        u: sorted((str(i.mechanism), i.iterations) for i in d.scram_credential_infos)
        for u, d in desc.items()
    }
    assert got == {
        "bob": [("ScramMechanism.SCRAM_SHA_512", 8192)],
        "usercc": [("ScramMechanism.SCRAM_SHA_256", 8192), ("ScramMechanism.SCRAM_SHA_512", 4096)],
    }
    boot = listener(b, "SASL_SSL")
    cc256 = sasl_conf("SASL_SSL", "SCRAM-SHA-256", "usercc", "cc-pass", ca)
    cc512 = sasl_conf("SASL_SSL", "SCRAM-SHA-512", "usercc", "cc-pass-512", ca)
    round_trip(boot, cc256, "scram256")
    round_trip(boot, cc512, "scram512")
    # kafka-python speaks SCRAM too
    p = kafka.KafkaProducer(
        bootstrap_servers=boot, security_protocol="SASL_SSL", ssl_cafile=str(ca.path),
        sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="bob",
        sasl_plain_password="bob-pass", enable_idempotence=False,
    )
    for i in range(50):
        p.send("kp-scram", value=b"%d" % i, partition=0)
    p.flush(TIMEOUT)
    p.close()
    assert len(consume(admin_boot, "kp-scram", [0])) == 50
    # a confluent-kafka consumer group over SCRAM-SHA-512, and kcat over SCRAM-SHA-256
    group_consume(boot, cc512, "scram256", "scram-group", 100)
    kc = ["kcat", "-b", boot, "-X", "security.protocol=SASL_SSL", "-X", f"ssl.ca.location={ca.path}",
          "-X", "sasl.mechanism=SCRAM-SHA-256", "-X", "sasl.username=usercc",
          "-X", "sasl.password=cc-pass"]
    r = subprocess.run(kc + ["-P", "-t", "kcat-scram", "-p", "0"], input="a\nb\nc\n",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(kc + ["-C", "-t", "kcat-scram", "-o", "beginning", "-e", "-q"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["a", "b", "c"]
    # PLAIN checked against the SCRAM store
    assert can_connect(boot, sasl_conf("SASL_SSL", "PLAIN", "bob", "bob-pass", ca))
    # refused: wrong password, the other mechanism's password, an unknown user
    for conf in [
        sasl_conf("SASL_SSL", "SCRAM-SHA-256", "usercc", "wrong", ca),
        sasl_conf("SASL_SSL", "SCRAM-SHA-256", "usercc", "cc-pass-512", ca),
        sasl_conf("SASL_SSL", "SCRAM-SHA-256", "bob", "bob-pass", ca),  # bob has only -512
        sasl_conf("SASL_SSL", "SCRAM-SHA-256", "nobody", "x", ca),
    ]:
        t0 = time.monotonic()
        assert not can_connect(boot, conf)
        assert time.monotonic() - t0 < 6
    # bad alterations get Kafka's errors
    bad = a.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(
            "weak", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 1000), b"x")]
    )
    with pytest.raises(KafkaException, match="(?i)iterations"):
        bad["weak"].result(TIMEOUT)
    gone = a.alter_user_scram_credentials(
        [UserScramCredentialDeletion("ghost", ScramMechanism.SCRAM_SHA_256)])
    with pytest.raises(KafkaException, match="(?i)does not exist"):
        gone["ghost"].result(TIMEOUT)
    # credentials survive a restart; a deleted one stops working
    b.restart()
    boot = listener(b, "SASL_SSL")
    round_trip(boot, cc256, "after-restart")
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    a.alter_user_scram_credentials(
        [UserScramCredentialDeletion("usercc", ScramMechanism.SCRAM_SHA_256)]
    )["usercc"].result(TIMEOUT)
    assert not can_connect(boot, cc256)
    assert can_connect(boot, cc512)


# --- raw protocol: framing and the gate -------------------------------------------------------

def frame(api_key, version, corr, body, client_id=b"raw"):
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def kstr(s):
    return struct.pack(">h", len(s)) + s


def read_frame(sock):
    head = recv_exact(sock, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">i", head)
    return recv_exact(sock, n)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


METADATA_V0 = struct.pack(">i", 0)  # all topics


def test_v0_framing_and_nothing_before_authentication(broker_factory):
    b = broker_factory(
        overrides=["listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0", JAAS]
    )
    host, port = "127.0.0.1", b.listeners["SASL_PLAINTEXT"][1]
    # a request before authenticating closes the connection without an answer
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(frame(3, 0, 1, METADATA_V0))
    assert read_frame(s) is None
    s.close()
    # v0: SaslHandshake v0, then bare tokens, then Kafka requests again
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(frame(17, 0, 7, kstr(b"PLAIN")))
    resp = read_frame(s)
    corr, code = struct.unpack(">ih", resp[:6])
    assert (corr, code) == (7, 0)
    assert b"SCRAM-SHA-256" in resp and b"PLAIN" in resp
    token = b"\0alice\0alice-secret"
    s.sendall(struct.pack(">i", len(token)) + token)
    assert read_frame(s) == b"", "an empty final token"
    s.sendall(frame(3, 0, 8, METADATA_V0))
    resp = read_frame(s)
    assert resp is not None and struct.unpack(">i", resp[:4])[0] == 8
    s.close()
    # v0 with a wrong password: the connection closes
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(frame(17, 0, 1, kstr(b"PLAIN")))
    assert read_frame(s) is not None
    token = b"\0alice\0wrong"
    s.sendall(struct.pack(">i", len(token)) + token)
    assert read_frame(s) is None
    s.close()
    # v1: SaslAuthenticate with a wrong password answers SASL_AUTHENTICATION_FAILED, then closes
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(frame(17, 1, 1, kstr(b"PLAIN")))
    assert read_frame(s) is not None
    bad = b"\0alice\0wrong"
    s.sendall(frame(36, 0, 2, struct.pack(">i", len(bad)) + bad))
    resp = read_frame(s)
    corr, code = struct.unpack(">ih", resp[:6])
    assert (corr, code) == (2, 58)
    assert b"Invalid username or password" in resp
    assert read_frame(s) is None
    s.close()
    # a huge SASL frame is refused before it is read, and garbage closes the connection
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(struct.pack(">i", 1 << 30))
    assert read_frame(s) is None
    s.close()
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(frame(17, 1, 1, kstr(b"PLAIN")) + struct.pack(">i", 12) + b"\xff" * 12)
    read_frame(s)
    assert read_frame(s) is None
    s.close()
    # a client that connects and says nothing holds nothing: others still get in
    idle = [socket.create_connection((host, port), timeout=5) for _ in range(20)]
    round_trip(f"{host}:{port}", sasl_conf("SASL_PLAINTEXT", "PLAIN", "alice", "alice-secret"), "busy")
    for i in idle:
        i.close()


def authenticate_v1(host, port, user, password):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(frame(17, 1, 1, kstr(b"PLAIN")))
    assert struct.unpack(">ih", read_frame(s)[:6]) == (1, 0)
    tok = b"\0" + user + b"\0" + password
    s.sendall(frame(36, 1, 2, struct.pack(">i", len(tok)) + tok))
    resp = read_frame(s)
    corr, code = struct.unpack(">ih", resp[:6])
    assert (corr, code) == (2, 0)
    lifetime = struct.unpack(">q", resp[-8:])[0]
    return s, lifetime


def test_sessions_expire_without_reauthentication(broker_factory):
    b = broker_factory(
        overrides=[
            "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
            JAAS,
            "connections.max.reauth.ms=2000",
        ]
    )
    host, port = "127.0.0.1", b.listeners["SASL_PLAINTEXT"][1]
    s, lifetime = authenticate_v1(host, port, b"alice", b"alice-secret")
    assert lifetime == 2000
    s.sendall(frame(3, 0, 3, METADATA_V0))
    assert read_frame(s) is not None
    time.sleep(2.5)
    s.sendall(frame(3, 0, 4, METADATA_V0))
    assert read_frame(s) is None, "served after the session expired"
    s.close()
    # librdkafka re-authenticates on its own (KIP-368) and keeps producing past the lifetime
    conf = sasl_conf("SASL_PLAINTEXT", "PLAIN", "alice", "alice-secret")
    p = producer(f"{host}:{port}", **underscored(conf))
    sent = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        v = b"%d" % len(sent)
        produce_all(p, "reauth", [v], partition=0)
        sent.append(v)
        time.sleep(0.2)
    assert values(consume(f"{host}:{port}", "reauth", [0], **underscored(conf))) == sent
    # so does the sluice CLI: a consumer that outlives three session lifetimes on one
    # connection keeps fetching (without re-authentication the broker closes it at 2 s)
    xs = [a for k, v in conf.items() for a in ("-X", f"{k}={v}")]
    more = [b"late-%d" % i for i in range(6)]
    cli = subprocess.Popen(
        [str(CLI), "consume", "reauth", "-b", f"{host}:{port}", "--from-beginning",
         "-n", str(len(sent) + len(more)), "--timeout", "20000"] + xs,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for v in more:
            time.sleep(1)
            produce_all(p, "reauth", [v], partition=0)
        out, err = cli.communicate(timeout=TIMEOUT)
    finally:
        cli.kill()
    assert cli.returncode == 0, err.decode()
    assert out.split(b"\n")[:-1] == sent + more


@pytest.fixture
def sasl_cluster(request, tmp_path):
    yield from managed_cluster(
        request, tmp_path,
        overrides=["listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0"],
    )


def test_scram_credentials_are_replicated(sasl_cluster):
    c = sasl_cluster
    set_scram(c.brokers[1].bootstrap, "replicated", "r-pass")
    for i, b in c.brokers.items():
        boot = listener(b, "SASL_PLAINTEXT")
        conf = sasl_conf("SASL_PLAINTEXT", "SCRAM-SHA-256", "replicated", "r-pass")
        deadline = time.monotonic() + TIMEOUT
        while not can_connect(boot, conf):
            assert time.monotonic() < deadline, f"broker {i} never learned the credential"
            time.sleep(0.3)
