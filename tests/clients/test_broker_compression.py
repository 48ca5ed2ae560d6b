"""Broker-side compression with real clients: a topic's `compression.type` (and the broker's
default) makes the broker recompress batches whose codec differs, as Kafka does. The segment
files hold the topic's codec (checked with `sluice dump-log`), every client reads back every
record intact, transactional batches keep their flags, and changing the config applies to new
batches only."""

import json
import subprocess

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
)

from conftest import REPO
from helpers import (
    TIMEOUT,
    admin,
    consume,
    create_topic,
    kafka_error,
    kp_consume,
    kp_producer,
    produce_all,
    producer,
)


def cli():
    import os

    return os.environ.get("SLUICE_CLI_BIN", str(REPO / "target" / "debug" / "sluice"))


def dump(broker, topic):
    seg = broker.data_dir / f"{topic}-0" / "00000000000000000000.log"
    r = subprocess.run([cli(), "dump-log", "--output", "json", str(seg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    [d] = json.loads(r.stdout)
    return d["batches"]


def recs(tag, n=300):
    return [(f"k{i % 11}".encode(), f"{tag}-{i:05d}-".encode() * 6) for i in range(n)]


def produce_confluent(bootstrap, topic, rs, codec):
    p = producer(bootstrap, compression_type=codec, linger_ms=50)
    produce_all(p, topic, [v for _, v in rs], keys=[k for k, _ in rs], partition=0,
                headers=[("h", b"1")])


def produce_kafka_python(bootstrap, topic, rs, codec):
    p = kp_producer(bootstrap, compression_type=codec, linger_ms=50)
    fs = [p.send(topic, key=k, value=v, partition=0, headers=[("h", b"1")]) for k, v in rs]
    p.flush(30)
    for f in fs:
        f.get(30)
    p.close()


def produce_kcat(bootstrap, topic, rs, codec):
    lines = "".join(f"{k.decode()}\t{v.decode()}\n" for k, v in rs)
    r = subprocess.run(
        ["kcat", "-P", "-b", bootstrap, "-t", topic, "-p", "0", "-z", codec, "-K", "\t",
         "-H", "h=1", "-X", "linger.ms=50"],
        input=lines, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr


def read_back_everywhere(bootstrap, topic, want):
    got = consume(bootstrap, topic, [0])
    assert [(r.key, r.value) for r in got] == want
    assert all(r.headers == (("h", b"1"),) for r in got)
    assert [r.offset for r in got] == list(range(len(want)))
    got = kp_consume(bootstrap, topic, [0], len(want))
    assert [(r.key, r.value) for r in got] == want
    out = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-e", "-o", "beginning", "-q",
         "-f", "%k\t%s\t%h\n"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert [(r[0].encode(), r[1].encode()) for r in rows] == want
    assert all(r[2] == "h=1" for r in rows)


def test_topic_codec_recompresses_every_producer(broker):
    b = broker.bootstrap
    create_topic(b, "to-zstd", config={"compression.type": "zstd"})
    want = []
    for tag, codec, fn in [
        ("confluent", "none", produce_confluent),
        ("confluent-lz4", "lz4", produce_confluent),
        ("kafka-python", "gzip", produce_kafka_python),
        ("kcat", "snappy", produce_kcat),
        ("kcat-zstd", "zstd", produce_kcat),
    ]:
        rs = recs(tag)
        fn(b, "to-zstd", rs, codec)
        want += rs
    batches = dump(broker, "to-zstd")
    assert {x["compresscodec"] for x in batches} == {"zstd"}
    assert sum(x["count"] for x in batches) == len(want)
    read_back_everywhere(b, "to-zstd", want)


def test_uncompressed_topic_stores_plain_batches(broker):
    b = broker.bootstrap
    create_topic(b, "plain", config={"compression.type": "uncompressed"})
    rs = recs("gz")
    produce_confluent(b, "plain", rs, "gzip")
    batches = dump(broker, "plain")
    assert {x["compresscodec"] for x in batches} == {"none"}
    read_back_everywhere(b, "plain", rs)


def test_broker_default_and_altering_the_topic(broker_factory):
    broker = broker_factory(overrides=["compression.type=lz4", "compression.lz4.level=1"])
    b = broker.bootstrap
    create_topic(b, "t")
    a = admin(b)
    res = ConfigResource("topic", "t")
    entries = a.describe_configs([res])[res].result(TIMEOUT)
    ct = entries["compression.type"]
    assert ct.value == "lz4"
    assert ct.source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert entries["compression.lz4.level"].value == "1"
    first = recs("one")
    produce_confluent(b, "t", first, "gzip")
    assert {x["compresscodec"] for x in dump(broker, "t")} == {"lz4"}

    # new batches follow the altered config; stored batches stay as they are
    alter = ConfigResource("topic", "t", incremental_configs=[
        ConfigEntry("compression.type", "producer",
                    incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([alter])[alter].result(TIMEOUT)
    entries = a.describe_configs([res])[res].result(TIMEOUT)
    assert entries["compression.type"].value == "producer"
    second = recs("two")
    produce_confluent(b, "t", second, "snappy")
    codecs = [x["compresscodec"] for x in dump(broker, "t")]
    assert set(codecs) == {"lz4", "snappy"}
    assert codecs.index("snappy") > max(i for i, c in enumerate(codecs) if c == "lz4")
    read_back_everywhere(b, "t", first + second)

    # Kafka's values only
    bad = ConfigResource("topic", "t", incremental_configs=[
        ConfigEntry("compression.type", "brotli",
                    incremental_operation=AlterConfigOpType.SET)])
    try:
        a.incremental_alter_configs([bad])[bad].result(TIMEOUT)
        raise AssertionError("brotli accepted")
    except KafkaException as e:
        assert kafka_error(e).name() == "INVALID_CONFIG"


def test_transactional_batches_keep_their_flags_when_recompressed(broker):
    b = broker.bootstrap
    create_topic(b, "tx", config={"compression.type": "gzip"})
    p = producer(b, transactional_id="tx-1", compression_type="none", linger_ms=20)
    p.init_transactions(TIMEOUT)
    p.begin_transaction()
    committed = [f"c{i}".encode() * 10 for i in range(100)]
    for v in committed:
        p.produce("tx", v, partition=0)
    p.commit_transaction(TIMEOUT)
    p.begin_transaction()
    for i in range(50):
        p.produce("tx", f"a{i}".encode(), partition=0)
    p.abort_transaction(TIMEOUT)
    batches = dump(broker, "tx")
    data = [x for x in batches if not x["is_control"]]
    assert data and all(x["compresscodec"] == "gzip" and x["is_transactional"] for x in data)
    assert all(x["producer_id"] == data[0]["producer_id"] for x in data)
    got = consume(b, "tx", [0], isolation_level="read_committed")
    assert [r.value for r in got] == committed
