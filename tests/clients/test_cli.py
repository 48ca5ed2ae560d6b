"""`sluice group describe` (issue 7) against groups that real clients consume in.

CURRENT-OFFSET, LOG-END-OFFSET and LAG per partition are checked before, while and after a
confluent-kafka consumer group and a kafka-python consumer consume, including the "has no
active members" case and the CONSUMER-ID / HOST / CLIENT-ID of an active member.

The CLI binary comes from $SLUICE_CLI_BIN (tests/run.sh builds it), defaulting to the debug
build in target/.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import kafka
import pytest
from confluent_kafka import Consumer, TopicPartition

from helpers import TIMEOUT, create_topic, produce_all, producer

REPO = Path(__file__).resolve().parents[2]
CLI = Path(os.environ.get("SLUICE_CLI_BIN", REPO / "target" / "debug" / "sluice"))
PARTITIONS = 3
PER_PARTITION = 10
COLUMNS = [
    "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
    "CONSUMER-ID", "HOST", "CLIENT-ID",
]


def sluice(broker, *args):
    if not CLI.is_file():
        pytest.exit(
            f"sluice binary not found at {CLI}: run `cargo build -p sluice-tools --bin sluice` "
            "or set SLUICE_CLI_BIN",
            returncode=2,
        )
    return subprocess.run(
        [str(CLI), "--bootstrap-server", broker.bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(broker, *args):
    r = sluice(broker, *args)
    assert r.returncode == 0, f"sluice {' '.join(args)} exited {r.returncode}: {r.stderr}"
    return r.stdout


def describe(broker, group):
    """(text, {partition: row dict}) of `sluice group describe`."""
    text = ok(broker, "group", "describe", group)
    lines = text.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("GROUP "))
    assert lines[header].split() == COLUMNS
    # Kafka's layout: the columns start where the header's words start
    starts = [lines[header].index(c + " ") if c != "CLIENT-ID" else lines[header].index(c)
              for c in COLUMNS]
    rows = {}
    for line in lines[header + 1:]:
        if not line.strip():
            continue
        cells = line.split()
        assert len(cells) == 9, line
        for c, s in zip(cells, starts):
            assert line[s:s + len(c)] == c, f"column misaligned in {line!r}"
        row = dict(zip(COLUMNS, cells))
        rows[int(row["PARTITION"])] = row
    return text, rows


def describe_json(broker, group):
    [g] = json.loads(ok(broker, "group", "describe", group, "--output", "json"))
    return g


def check_offsets(rows, topic, group, current, end):
    """Every partition's CURRENT-OFFSET, LOG-END-OFFSET and LAG."""
    assert sorted(rows) == list(range(PARTITIONS))
    for p, row in rows.items():
        assert row["GROUP"] == group and row["TOPIC"] == topic
        assert int(row["CURRENT-OFFSET"]) == current[p], (p, row)
        assert int(row["LOG-END-OFFSET"]) == end[p], (p, row)
        assert int(row["LAG"]) == end[p] - current[p], (p, row)


def fill(broker, topic, count):
    prod = producer(broker.bootstrap)
    for p in range(PARTITIONS):
        produce_all(prod, topic, [f"p{p}-{i}".encode() for i in range(count)], partition=p)


def test_describe_before_during_and_after_a_confluent_group(broker):
    topic, group = "cli-lag", "ck-group"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    fill(broker, topic, PER_PARTITION)
    end = {p: PER_PARTITION for p in range(PARTITIONS)}

    # before: the group does not exist
    r = sluice(broker, "group", "describe", group)
    assert r.returncode == 1
    assert r.stderr.strip() == f"sluice: error: consumer group '{group}' does not exist"

    # during: a confluent-kafka member consumes 15 records and commits what it processed
    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "client.id": "cli-test-ck",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    })
    try:
        c.subscribe([topic])
        position = {}
        deadline = time.monotonic() + TIMEOUT
        got = 0
        while got < 15:
            assert time.monotonic() < deadline, f"only {got} records consumed"
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            position[m.partition()] = m.offset() + 1
            got += 1
        c.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in position.items()],
            asynchronous=False,
        )
        current = {p: position.get(p, 0) for p in range(PARTITIONS)}
        text, rows = describe(broker, group)
        assert "no active members" not in text
        # partitions nothing was committed for show '-' as CURRENT-OFFSET and LAG
        for p in range(PARTITIONS):
            if p not in position:
                assert rows[p]["CURRENT-OFFSET"] == "-" and rows[p]["LAG"] == "-"
                rows[p]["CURRENT-OFFSET"] = "0"
                rows[p]["LAG"] = str(end[p])
        check_offsets(rows, topic, group, current, end)
        for row in rows.values():
            assert row["CONSUMER-ID"].startswith("cli-test-ck-"), row
            assert row["CLIENT-ID"] == "cli-test-ck"
            assert "127.0.0.1" in row["HOST"]
        g = describe_json(broker, group)
        assert g["state"] == "Stable" and len(g["members"]) == 1
        lags = {r["partition"]: r["lag"] for r in g["rows"]}
        assert lags == {p: end[p] - position[p] if p in position else None for p in end}
    finally:
        c.close()

    # after: no active members, offsets stay
    text, rows = describe(broker, group)
    assert text.startswith(f"\nConsumer group '{group}' has no active members.\n\nGROUP ")
    for p, row in rows.items():
        assert (row["CONSUMER-ID"], row["HOST"], row["CLIENT-ID"]) == ("-", "-", "-")
    committed = {p: position[p] for p in position}
    for p in committed:
        assert int(rows[p]["CURRENT-OFFSET"]) == committed[p]
        assert int(rows[p]["LAG"]) == end[p] - committed[p]

    # more data: LOG-END-OFFSET and LAG grow, CURRENT-OFFSET does not (on a partition with a
    # committed offset: without members, describe lists only those)
    lp = min(committed)
    prod = producer(broker.bootstrap)
    produce_all(prod, topic, [b"late-%d" % i for i in range(5)], partition=lp)
    end[lp] += 5
    _, rows = describe(broker, group)
    assert int(rows[lp]["LOG-END-OFFSET"]) == end[lp]
    assert int(rows[lp]["CURRENT-OFFSET"]) == committed[lp]
    assert int(rows[lp]["LAG"]) == end[lp] - committed[lp]

    # a kafka-python consumer of the same group (assigned partitions, commits with the group's
    # id) reads the rest from the committed offsets: lag 0
    kc = kafka.KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    try:
        kc.assign([kafka.TopicPartition(topic, p) for p in range(PARTITIONS)])
        rest = sum(1 for _ in kc)
        assert rest == sum(end.values()) - sum(committed.values())
        kc.commit()
    finally:
        kc.close()
    text, rows = describe(broker, group)
    assert "has no active members" in text
    check_offsets(rows, topic, group, end, end)


def test_reset_then_kafka_python_consumes(broker):
    topic, group = "cli-reset", "kp-group"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    fill(broker, topic, PER_PARTITION)
    end = {p: PER_PARTITION for p in range(PARTITIONS)}

    # before consuming: commit offset 0 everywhere with the CLI, the whole topic is lag
    ok(broker, "group", "reset-offsets", group, "--topic", topic, "--to-earliest")
    text, rows = describe(broker, group)
    assert f"Consumer group '{group}' has no active members." in text
    check_offsets(rows, topic, group, {p: 0 for p in end}, end)
    g = describe_json(broker, group)
    assert [r["lag"] for r in g["rows"]] == [PER_PARTITION] * PARTITIONS

    # kafka-python reads everything from the committed offsets and commits
    kc = kafka.KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        kc.assign([kafka.TopicPartition(topic, p) for p in range(PARTITIONS)])
        assert sum(1 for _ in kc) == sum(end.values())
        kc.commit()
    finally:
        kc.close()
    _, rows = describe(broker, group)
    check_offsets(rows, topic, group, end, end)

    # and back: a reset to offset 4 of one partition shows as lag 6 there
    ok(broker, "group", "reset-offsets", group, "--topic", f"{topic}:1", "--to-offset", "4")
    _, rows = describe(broker, group)
    check_offsets(rows, topic, group, {0: 10, 1: 4, 2: 10}, end)

    # the group can be deleted once inactive
    assert ok(broker, "group", "delete", group) == (
        f"Deletion of requested consumer groups ('{group}') was successful.\n")
    r = sluice(broker, "group", "describe", group)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_sluice_consume_group_seen_by_confluent(broker):
    """The CLI's own group member commits offsets that confluent-kafka resumes from."""
    topic, group = "cli-member", "cli-group"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    fill(broker, topic, PER_PARTITION)
    out = ok(broker, "consume", topic, "--group", group, "--from-beginning", "-n", "12")
    assert len(out.splitlines()) == 12
    g = describe_json(broker, group)
    assert g["state"] == "Empty", "the CLI member left the group on exit"
    assert sum(r["current_offset"] for r in g["rows"]) == 12
    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "session.timeout.ms": 6000,
    })
    try:
        c.subscribe([topic])
        got, eof = 0, set()
        deadline = time.monotonic() + TIMEOUT
        while len(eof) < PARTITIONS:
            assert time.monotonic() < deadline, f"{got} records, eof {eof}"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                eof.add(m.partition())
                continue
            got += 1
        assert got == PARTITIONS * PER_PARTITION - 12
    finally:
        c.close()
