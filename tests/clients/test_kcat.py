"""kcat (librdkafka 2.0.x, strict about ApiVersions): produce, consume, keys, headers, metadata."""

import json
import subprocess

from helpers import create_topic


def kcat(broker, *args, stdin=None):
    """Runs kcat against the broker and returns its stdout; fails the test on a non-zero exit."""
    proc = subprocess.run(
        ["kcat", "-b", broker.bootstrap, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"kcat {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def consume_lines(broker, topic, fmt):
    return kcat(broker, "-C", "-t", topic, "-e", "-o", "beginning", "-q", "-f", fmt).splitlines()


def test_kcat_produce_and_consume_lines(broker):
    lines = [f"line {i}" for i in range(50)]
    kcat(broker, "-P", "-t", "plain", "-p", "0", stdin="\n".join(lines) + "\n")
    got = consume_lines(broker, "plain", "%p %o %k %s\n")
    assert got == [f"0 {i}  line {i}" for i in range(50)]


def test_kcat_keyed_messages(broker):
    create_topic(broker.bootstrap, "keyed", partitions=3)
    pairs = [(f"key{i % 5}", f"value{i}") for i in range(60)]
    kcat(broker, "-P", "-t", "keyed", "-K:", stdin="".join(f"{k}:{v}\n" for k, v in pairs))
    rows = [line.split(" ") for line in consume_lines(broker, "keyed", "%p %o %k %s\n")]
    assert sorted((k, v) for _, _, k, v in rows) == sorted(pairs)
    partition_of = {}
    for p, _, k, _ in rows:
        assert partition_of.setdefault(k, p) == p, f"key {k} on {partition_of[k]} and {p}"
    for p in {p for p, *_ in rows}:
        offsets = [int(o) for q, o, _, _ in rows if q == p]
        assert offsets == list(range(len(offsets))), f"partition {p} offsets {offsets}"
        sent = [v for k, v in pairs if partition_of[k] == p]
        assert [v for q, _, _, v in rows if q == p] == sent


def test_kcat_headers(broker):
    kcat(
        broker, "-P", "-t", "headed", "-H", "trace=abc123", "-H", "source=kcat",
        stdin="first\nsecond\n",
    )
    got = consume_lines(broker, "headed", "%o %s %h\n")
    assert got == ["0 first trace=abc123,source=kcat", "1 second trace=abc123,source=kcat"]


def test_kcat_metadata_listing(broker):
    create_topic(broker.bootstrap, "listed", partitions=4)
    text = kcat(broker, "-L")
    assert 'topic "listed" with 4 partitions' in text
    assert f"broker 0 at {broker.bootstrap}" in text

    meta = json.loads(kcat(broker, "-L", "-J", "-t", "listed"))
    assert [b["id"] for b in meta["brokers"]] == [0]
    (topic,) = meta["topics"]
    assert topic["topic"] == "listed"
    assert [p["partition"] for p in topic["partitions"]] == [0, 1, 2, 3]
    assert all(p["leader"] == 0 for p in topic["partitions"])
