"""Compressed batches across clients: every producer (confluent-kafka, kafka-python with its
codec packages, kcat, kafkajs) in every codec (gzip, snappy, lz4, zstd) writes keyed records
with headers; the batches are stored as the producer compressed them (checked in the segment
files with `sluice dump-log`), and every consumer (confluent-kafka, kafka-python, kcat,
kafkajs) reads every record back, keys, values and headers intact.

kafkajs has gzip built in; the other codecs are registered by tests/clients/js/lib.js from
npm packages that need no native build: snappy through kafkajs-snappy (snappyjs), lz4 through
lz4js (the LZ4 frame format in plain JS, instead of kafkajs-lz4's node-gyp addon), zstd
through @bokuweb/zstd-wasm (libzstd in WebAssembly, instead of @kafkajs/zstd's node-gyp
addon)."""

import json
import subprocess

import pytest

from conftest import REPO
import kafkajs_helpers as kjs
from helpers import consume, create_topic, kp_consume, kp_producer, produce_all, producer

CODECS = ["gzip", "snappy", "lz4", "zstd"]
PRODUCERS = ["confluent", "kafka-python", "kcat", "kafkajs"]
N = 200


def cli():
    import os

    return os.environ.get("SLUICE_CLI_BIN", str(REPO / "target" / "debug" / "sluice"))


def records(producer_name, codec):
    # compressible values, so every codec really shrinks the batch
    return [
        (f"k{i % 7}".encode(), f"{producer_name}-{codec}-{i:05d}-".encode() * 8)
        for i in range(N)
    ]


def produce(broker, who, topic, codec, recs):
    if who == "confluent":
        p = producer(broker.bootstrap, compression_type=codec, linger_ms=50)
        produce_all(p, topic, [v for _, v in recs], keys=[k for k, _ in recs], partition=0,
                    headers=[("h", b"1")])
    elif who == "kafka-python":
        p = kp_producer(broker.bootstrap, compression_type=codec, linger_ms=50)
        futures = [p.send(topic, key=k, value=v, partition=0, headers=[("h", b"1")])
                   for k, v in recs]
        p.flush(30)
        for f in futures:
            f.get(30)
        p.close()
    elif who == "kafkajs":
        # one send: one batch of all N records
        msgs = [kjs.message(v, key=k, headers=[("h", b"1")], partition=0) for k, v in recs]
        [res] = kjs.produce(broker.bootstrap, [kjs.send(topic, msgs, compression=codec)])
        assert res["offsets"] == list(range(N))
    else:
        lines = "".join(f"{k.decode()}\t{v.decode()}\n" for k, v in recs)
        r = subprocess.run(
            ["kcat", "-P", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-z", codec,
             "-K", "\t", "-H", "h=1", "-X", "linger.ms=50"],
            input=lines, capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, r.stderr


def stored_codecs(broker, topic):
    seg = broker.data_dir / f"{topic}-0" / "00000000000000000000.log"
    r = subprocess.run([cli(), "dump-log", "--output", "json", str(seg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    [dump] = json.loads(r.stdout)
    return {b["compresscodec"] for b in dump["batches"]}, dump["records"]


@pytest.mark.parametrize("who", PRODUCERS)
def test_every_codec_is_stored_and_read_back_by_every_client(broker, who):
    for codec in CODECS:
        topic = f"z-{who}-{codec}"
        create_topic(broker.bootstrap, topic)
        recs = records(who, codec)
        produce(broker, who, topic, codec, recs)
        codecs, count = stored_codecs(broker, topic)
        assert codecs == {codec}, f"{who} {codec}: stored as {codecs}"
        assert count == N
        want = [(k, v) for k, v in recs]
        # confluent-kafka
        got = consume(broker.bootstrap, topic, [0])
        assert [(r.key, r.value) for r in got] == want, f"confluent read {who}/{codec}"
        assert all(r.headers == (("h", b"1"),) for r in got)
        assert [r.offset for r in got] == list(range(N))
        # kafka-python
        got = kp_consume(broker.bootstrap, topic, [0], N)
        assert [(r.key, r.value) for r in got] == want, f"kafka-python read {who}/{codec}"
        assert all(r.headers == (("h", b"1"),) for r in got)
        # kcat
        out = subprocess.run(
            ["kcat", "-C", "-b", broker.bootstrap, "-t", topic, "-e", "-o", "beginning", "-q",
             "-f", "%o\t%k\t%s\t%h\n"],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        rows = [line.split("\t") for line in out.stdout.splitlines()]
        assert [(r[1].encode(), r[2].encode()) for r in rows] == want, f"kcat read {who}/{codec}"
        assert all(r[3] == "h=1" for r in rows)
        # kafkajs
        got = kjs.consume(broker.bootstrap, topic)
        assert [(r.key, r.value) for r in got] == want, f"kafkajs read {who}/{codec}"
        assert all(r.headers == (("h", b"1"),) for r in got)
        assert [r.offset for r in got] == list(range(N))
