"""Compacted topics (cleanup.policy=compact) with real clients: the broker's log cleaner keeps
the latest value per key (tombstones go after delete.retention.ms), consumers of
confluent-kafka and kafka-python read the cleaned log (offset gaps, emptied batches) from the
beginning, the result survives a restart and a SIGKILL in the middle of cleaning, and keyless
records are refused with INVALID_RECORD and per-record errors (KIP-467)."""

import time

import kafka
import kafka.errors
from confluent_kafka import KafkaError
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from helpers import admin, consume, create_topic, kp_consume, kp_producer, producer, produce_all

# small segments that roll fast, a cleaner that looks often
COMPACT = {
    "cleanup.policy": "compact",
    "segment.bytes": "4096",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "1000",
}
FAST_CLEANER = ["log.cleaner.backoff.ms=100"]
KEYS = 20
VERSIONS = 30
DELETED = range(0, 4)  # keys that end with a tombstone


def key(k):
    return f"key-{k:02d}".encode()


def value(k, v):
    return f"value-{k:02d}-{v:03d}-".encode() + b"x" * 80


def fold(recs):
    """What a consumer reading from the beginning ends up with: key -> latest value."""
    out = {}
    for r in recs:
        if r.value is None:
            out.pop(r.key, None)
        else:
            out[r.key] = r.value
    return out


def expected():
    want = {key(k): value(k, VERSIONS - 1) for k in range(KEYS)}
    for k in DELETED:
        del want[key(k)]
    return want


def produce_history(bootstrap, topic):
    """VERSIONS rounds of updates to KEYS keys, tombstones for DELETED, then (after segment.ms)
    one more record so everything before it sits in sealed segments. Returns the count."""
    p = producer(bootstrap)
    keys, values = [], []
    for v in range(VERSIONS):
        for k in range(KEYS):
            keys.append(key(k))
            values.append(value(k, v))
    for k in DELETED:
        keys.append(key(k))
        values.append(None)
    produce_all(p, topic, values, keys=keys, partition=0)
    time.sleep(0.3)  # segment.ms passes: the next append rolls the segment
    produce_all(p, topic, [b"tail"], keys=[b"tail"], partition=0)
    return len(values) + 1


def check_log(recs):
    offsets = [r.offset for r in recs]
    assert offsets == sorted(set(offsets)), "offsets ascend, each once"
    want = expected()
    want[b"tail"] = b"tail"
    assert fold(recs) == want


def wait_for(bootstrap, topic, done, timeout=40.0):
    """Consumes from the beginning until `done(records)` (the cleaner runs on its own)."""
    deadline = time.monotonic() + timeout
    while True:
        recs = consume(bootstrap, topic, [0])
        if done(recs):
            return recs
        assert time.monotonic() < deadline, f"not cleaned in {timeout}s: {len(recs)} records"
        time.sleep(0.3)


def test_compacted_topic_keeps_the_latest_value_per_key(broker_factory):
    b = broker_factory(overrides=FAST_CLEANER)
    topic = "compacted"
    create_topic(b.bootstrap, topic, 1, COMPACT)
    produced = produce_history(b.bootstrap, topic)

    # the cleaner runs: far fewer records, the same latest values, offsets kept
    recs = wait_for(b.bootstrap, topic, lambda rs: len(rs) < produced // 2)
    check_log(recs)
    assert recs[-1].offset == produced - 1, "the log end did not move"
    # every key's value is its last version: older versions are gone below the active segment
    per_key = {}
    for r in recs:
        per_key.setdefault(r.key, []).append(r)
    assert all(len(v) == 1 for k, v in per_key.items() if k != b"tail"), {
        k: len(v) for k, v in per_key.items() if len(v) > 1
    }

    # tombstones go once delete.retention.ms has passed (the delete horizon of KIP-534)
    recs = wait_for(b.bootstrap, topic, lambda rs: all(r.value is not None for r in rs))
    check_log(recs)
    assert not any(r.key == key(k) for r in recs for k in DELETED)

    # kafka-python reads the same cleaned log (offset gaps, emptied batches)
    kp = kp_consume(b.bootstrap, topic, [0], expected=len(recs))
    assert [(r.offset, r.key, r.value) for r in kp] == [(r.offset, r.key, r.value) for r in recs]

    # the cleaned segments persist across a restart
    b.restart()
    again = consume(b.bootstrap, topic, [0])
    assert [(r.offset, r.key, r.value) for r in again] == [
        (r.offset, r.key, r.value) for r in recs
    ]

    # and updates after the restart are compacted too
    p = producer(b.bootstrap)
    produce_all(p, topic, [value(5, 999)] * 50, keys=[key(5)] * 50, partition=0)
    time.sleep(0.3)
    produce_all(p, topic, [b"tail2"], keys=[b"tail"], partition=0)
    recs = wait_for(
        b.bootstrap, topic, lambda rs: sum(r.key == key(5) for r in rs) == 1
    )
    assert fold(recs)[key(5)] == value(5, 999)


def test_a_compacted_topic_survives_sigkill_during_cleaning(broker_factory):
    b = broker_factory(overrides=FAST_CLEANER)
    topic = "killed"
    create_topic(b.bootstrap, topic, 1, COMPACT)
    produced = produce_history(b.bootstrap, topic)
    # the cleaner starts within its 100 ms backoff: kill the broker around then
    time.sleep(0.15)
    b.kill()
    b.start()
    recs = consume(b.bootstrap, topic, [0])
    check_log(recs)  # cleaned or not: no latest value lost
    recs = wait_for(b.bootstrap, topic, lambda rs: len(rs) < produced // 2)
    check_log(recs)


def test_keyless_records_are_refused_with_invalid_record(broker):
    topic = "needs-keys"
    create_topic(broker.bootstrap, topic, 1, {"cleanup.policy": "compact"})

    # confluent-kafka (librdkafka): the delivery report carries INVALID_RECORD
    p = producer(broker.bootstrap)
    reports = []
    p.produce(topic, value=b"no key", partition=0, on_delivery=lambda e, m: reports.append(e))
    assert p.flush(30) == 0
    assert len(reports) == 1 and reports[0] is not None
    assert reports[0].code() == KafkaError.INVALID_RECORD, reports[0]

    # kafka-python reads record_errors: only the keyless record of the batch is named, the
    # keyed one fails as part of a refused batch
    kp = kp_producer(broker.bootstrap, linger_ms=500, retries=0)
    keyed = kp.send(topic, key=b"k", value=b"keyed", partition=0)
    keyless = kp.send(topic, value=b"keyless", partition=0)
    kp.flush(30)
    kp.close()
    try:
        keyless.get(10)
        raise AssertionError("a keyless record was accepted")
    except kafka.errors.InvalidRecordError as e:
        assert "Compacted topic cannot accept message without key in topic partition " \
            f"{topic}-0." in str(e), str(e)
    try:
        keyed.get(10)
        raise AssertionError("the batch with a keyless record was accepted")
    except kafka.errors.KafkaError as e:
        assert not isinstance(e, kafka.errors.InvalidRecordError), e
        assert "part of a batch" in str(e), str(e)

    # keyed records are fine; nothing of the refused batches was stored
    produce_all(p, topic, [b"v"], keys=[b"k"], partition=0)
    recs = consume(broker.bootstrap, topic, [0])
    assert [(r.offset, r.key, r.value) for r in recs] == [(0, b"k", b"v")]


def test_cleanup_policy_through_admin_configs(broker):
    a = admin(broker.bootstrap)
    create_topic(broker.bootstrap, "both", 1, {"cleanup.policy": "compact,delete"})
    create_topic(broker.bootstrap, "later", 1)
    res = ConfigResource(ConfigResource.Type.TOPIC, "later")
    res.add_incremental_config(
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)
    )
    res.add_incremental_config(
        ConfigEntry("min.compaction.lag.ms", "5", incremental_operation=AlterConfigOpType.SET)
    )
    a.incremental_alter_configs([res])[res].result(30)
    for name, policy in (("both", "compact,delete"), ("later", "compact")):
        r = ConfigResource(ConfigResource.Type.TOPIC, name)
        configs = a.describe_configs([r])[r].result(30)
        assert configs["cleanup.policy"].value == policy
        assert configs["delete.retention.ms"].value == "86400000"
        assert configs["min.cleanable.dirty.ratio"].value == "0.5"
    r = ConfigResource(ConfigResource.Type.TOPIC, "later")
    assert a.describe_configs([r])[r].result(30)["min.compaction.lag.ms"].value == "5"
    # a keyless record on the topic that became compacted is refused too
    p = producer(broker.bootstrap)
    reports = []
    p.produce("later", value=b"x", partition=0, on_delivery=lambda e, m: reports.append(e))
    p.flush(30)
    assert reports[0] is not None and reports[0].code() == KafkaError.INVALID_RECORD
    # a policy sluice does not know is refused
    bad = ConfigResource(ConfigResource.Type.TOPIC, "later")
    bad.add_incremental_config(
        ConfigEntry("cleanup.policy", "shred", incremental_operation=AlterConfigOpType.SET)
    )
    try:
        a.incremental_alter_configs([bad])[bad].result(30)
        raise AssertionError("cleanup.policy=shred accepted")
    except Exception as e:  # noqa: BLE001 - confluent's KafkaException
        assert e.args[0].code() == KafkaError.INVALID_CONFIG, e
