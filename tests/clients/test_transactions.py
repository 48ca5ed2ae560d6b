"""Transactions with real clients (issue 8): confluent-kafka and kafka-python transactional
producers, read_committed consumers of both clients, transactional offset commits, the
consume-transform-produce pipeline of the bank-balance seed made exactly-once, transaction
timeouts, zombie fencing, broker restarts with transactions open, and the admin APIs
(ListTransactions, DescribeTransactions, DescribeProducers through kafka-python; confluent-kafka
2.16's AdminClient has none of them).

Conventions: every record value is unique; "committed" records are the delivery reports of the
transactions that were committed. A read_committed reader must return exactly those, in offset
order per partition; a read_uncommitted reader every record that was appended. Commit and
abort markers occupy one offset in each partition of the transaction, so a partition's end
offset is its record count plus the number of transactions that wrote to it.

The consume-transform-produce transformer runs in a subprocess (this file run as a script,
see `transformer_main`) so that it can be SIGKILLed at arbitrary points.
"""

import gc
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import kafka
import kafka.errors
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata

from helpers import TIMEOUT, Rec, admin, create_topic
from txn_helpers import LiveReader, ck_read, kp_end_offsets, kp_read, list_offsets, wait_until

CLEANUP = "transaction.abort.timed.out.transaction.cleanup.interval.ms=500"
T = 30  # seconds: timeout of the clients' blocking transactional calls


# ---------------------------------------------------------------------------------------------
# producing


def txn_producer(bootstrap, tid, conf=None):
    settings = {"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 1}
    settings.update(conf or {})
    return Producer(settings)


class TDeliveries:
    """confluent-kafka delivery reports keyed by topic: ok is a list of (topic, Rec)."""

    def __init__(self):
        self.ok = []
        self.failed = []

    def callback(self, err, msg):
        if err is None:
            self.ok.append((msg.topic(), Rec(msg.partition(), msg.offset(), msg.key(),
                                             msg.value())))
        else:
            self.failed.append((err, msg.topic(), msg.value()))


def send(prod, d, topic, partition, value, key=None):
    prod.produce(topic, value=value, key=key, partition=partition, on_delivery=d.callback)
    prod.poll(0)


def flushed(prod, d):
    assert prod.flush(T) == 0, "undelivered messages"
    assert not d.failed, d.failed


def plain_produce(bootstrap, topic, partition, values):
    """Non-transactional records; returns their offsets."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    d = TDeliveries()
    for v in values:
        send(p, d, topic, partition, v)
    flushed(p, d)
    return [r.offset for _, r in d.ok]


def group_metadata(bootstrap, group):
    """A consumer of `group` (never subscribed) and its group metadata for
    send_offsets_to_transaction; the consumer must outlive the call."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    return c, c.consumer_group_metadata()


def ck_group_offsets(bootstrap, group, topic, partitions):
    """{partition: committed offset} via AdminClient.list_consumer_group_offsets (OffsetFetch,
    require_stable false); partitions without a committed offset are left out."""
    a = admin(bootstrap)
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    res = a.list_consumer_group_offsets([req], request_timeout=TIMEOUT)[group].result(TIMEOUT)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, f"{group} {tp}: {tp.error}"
        if tp.offset >= 0:
            out[tp.partition] = tp.offset
    return out


def ck_watermarks(bootstrap, tp, isolation):
    """Consumer.get_watermark_offsets(cached=False) (ListOffsets earliest and latest) of a
    consumer with `isolation`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "txn-tests-watermarks",
                  "isolation.level": isolation})
    try:
        return c.get_watermark_offsets(TopicPartition(*tp), TIMEOUT, cached=False)
    finally:
        c.close()


def values_by_tp(recs_by_tp):
    return {tp: [r.value for r in recs] for tp, recs in recs_by_tp.items()}


def expect_by_tp(delivered, tps):
    """{(topic, partition): [values in offset order]} of delivered (topic, Rec) pairs."""
    out = {tp: [] for tp in tps}
    for topic, r in sorted(delivered, key=lambda x: (x[0], x[1].partition, x[1].offset)):
        out[(topic, r.partition)].append(r.value)
    return out


def check_reads(bootstrap, tps, committed, everything, reader="confluent"):
    """read_committed gives exactly `committed` (and at the delivered offsets),
    read_uncommitted exactly `everything` ((topic, Rec) delivery reports)."""
    read = ck_read if reader == "confluent" else kp_read
    rc = read(bootstrap, tps, "read_committed")
    ru = read(bootstrap, tps, "read_uncommitted")
    assert values_by_tp(rc) == expect_by_tp(committed, tps), f"{reader} read_committed"
    assert values_by_tp(ru) == expect_by_tp(everything, tps), f"{reader} read_uncommitted"
    want_offsets = {(t, r.value): r.offset for t, r in everything}
    for (t, _p), recs in list(rc.items()) + list(ru.items()):
        for r in recs:
            assert want_offsets[(t, r.value)] == r.offset, (t, r)
    return rc, ru


def markers_expected(rounds, tps):
    """{tp: number of transactions that wrote to tp} from a list of sets of tps."""
    return {tp: sum(1 for touched in rounds if tp in touched) for tp in tps}


# ---------------------------------------------------------------------------------------------
# the seed's lab


def test_lab_commit_or_abort_rounds_confluent(broker):
    """30 transactions of 4 records (2 to each of two topics, random partitions), each
    committed or aborted at random; read_committed readers (one polling all along, fresh ones
    of both clients afterwards) see exactly the committed records, read_uncommitted readers all
    of them, and every transaction left one marker per partition it wrote to."""
    bs = broker.bootstrap
    ta, tb = "lab-a", "lab-b"
    create_topic(bs, ta, 2)
    create_topic(bs, tb, 2)
    tps = [(t, p) for t in (ta, tb) for p in range(2)]
    rng = random.Random(2002)
    live = LiveReader(bs, tps, "read_committed")
    prod = txn_producer(bs, "lab-producer")
    prod.init_transactions(T)
    committed, everything, rounds = [], [], []
    outcomes = []
    for rnd in range(30):
        d = TDeliveries()
        prod.begin_transaction()
        touched = set()
        for topic in (ta, tb):
            for i in range(2):
                p = rng.randrange(2)
                touched.add((topic, p))
                send(prod, d, topic, p, f"r{rnd:02d}-{topic}-{i}".encode(), key=b"%d" % rnd)
        flushed(prod, d)
        assert len(d.ok) == 4
        time.sleep(rng.uniform(0, 0.05))  # the seed waits before deciding; the reader polls
        commit = rng.random() < 0.5
        if commit:
            prod.commit_transaction(T)
            committed += d.ok
        else:
            prod.abort_transaction(T)
        outcomes.append("C" if commit else "A")
        everything += d.ok
        rounds.append(touched)
    print("rounds:", "".join(outcomes))
    assert 5 < outcomes.count("C") < 25  # the seed gives both kinds plenty of rounds
    try:
        wait_until(lambda: live.count() >= len(committed),
                   lambda: f"live reader has {live.count()} of {len(committed)}", timeout=T)
        time.sleep(0.3)  # anything beyond the committed records would arrive by now
    finally:
        live.stop()
    assert not live.errors, live.errors
    assert values_by_tp(live.snapshot()) == expect_by_tp(committed, tps), "live read_committed"

    check_reads(bs, tps, committed, everything, "confluent")
    check_reads(bs, tps, committed, everything, "kafka-python")
    markers = markers_expected(rounds, tps)
    counts = {tp: len(expect_by_tp(everything, tps)[tp]) for tp in tps}
    want_end = {tp: counts[tp] + markers[tp] for tp in tps}
    assert list_offsets(bs, tps, "read_uncommitted") == want_end
    # no transaction is open: the last stable offset is the high watermark
    assert list_offsets(bs, tps, "read_committed") == want_end
    assert all(want_end[tp] > counts[tp] for tp in tps)


def test_lab_commit_or_abort_rounds_kafka_python(broker):
    """The lab with kafka-python's transactional producer (12 rounds); committed rounds also
    commit the group offset `round + 1` through send_offsets_to_transaction, which must end
    at the last committed round's value; both clients' readers check the result."""
    bs = broker.bootstrap
    ta, tb, src = "kplab-a", "kplab-b", "kplab-src"
    for t in (ta, tb, src):
        create_topic(bs, t, 2)
    tps = [(t, p) for t in (ta, tb) for p in range(2)]
    rng = random.Random(2003)
    prod = kafka.KafkaProducer(bootstrap_servers=bs, transactional_id="kp-lab", linger_ms=1)
    try:
        prod.init_transactions()
        committed, everything, rounds, outcomes = [], [], [], []
        last_committed_round = None
        for rnd in range(12):
            prod.begin_transaction()
            futs, touched = [], set()
            for topic in (ta, tb):
                for i in range(2):
                    p = rng.randrange(2)
                    touched.add((topic, p))
                    v = f"kp{rnd:02d}-{topic}-{i}".encode()
                    futs.append((topic, v, prod.send(topic, value=v, partition=p)))
            prod.send_offsets_to_transaction(
                {kafka.TopicPartition(src, 0): OffsetAndMetadata(rnd + 1, "", -1)},
                "kp-lab-group",
            )
            recs = []
            for topic, v, f in futs:
                md = f.get(timeout=T)
                recs.append((topic, Rec(md.partition, md.offset, None, v)))
            if rng.random() < 0.5:
                prod.commit_transaction()
                committed += recs
                outcomes.append("C")
                last_committed_round = rnd
            else:
                prod.abort_transaction()
                outcomes.append("A")
            everything += recs
            rounds.append(touched)
    finally:
        prod.close(timeout=10)
    print("rounds:", "".join(outcomes))
    assert "C" in outcomes and "A" in outcomes
    check_reads(bs, tps, committed, everything, "kafka-python")
    check_reads(bs, tps, committed, everything, "confluent")
    markers = markers_expected(rounds, tps)
    counts = {tp: len(expect_by_tp(everything, tps)[tp]) for tp in tps}
    assert kp_end_offsets(bs, tps, "read_committed") == {
        tp: counts[tp] + markers[tp] for tp in tps
    }
    assert ck_group_offsets(bs, "kp-lab-group", src, [0, 1]) == {0: last_committed_round + 1}


def test_open_transaction_invisible_to_read_committed(broker):
    """While a transaction is open its records, and everything after them, are invisible to
    read_committed: ListOffsets(latest, read_committed) is the LSO = the first offset of the
    open transaction (AdminClient and kafka-python's end_offsets agree), read_uncommitted
    gives the high watermark; a read_committed consumer stops at the LSO. Commit makes them
    visible (marker included in the offsets), an abort never does."""
    bs, topic = broker.bootstrap, "open-txn"
    create_topic(bs, topic, 1)
    tp = (topic, 0)
    prod = txn_producer(bs, "open-txn-producer")
    prod.init_transactions(T)

    d = TDeliveries()
    prod.begin_transaction()
    send(prod, d, topic, 0, b"c0")
    send(prod, d, topic, 0, b"c1")
    flushed(prod, d)
    prod.commit_transaction(T)  # offsets 0, 1, marker 2
    assert [r.offset for _, r in d.ok] == [0, 1]

    d2 = TDeliveries()
    prod.begin_transaction()
    send(prod, d2, topic, 0, b"o0")
    send(prod, d2, topic, 0, b"o1")
    flushed(prod, d2)  # offsets 3, 4: appended, not committed
    assert [r.offset for _, r in d2.ok] == [3, 4]
    assert list_offsets(bs, [tp], "read_committed") == {tp: 3}
    assert list_offsets(bs, [tp], "read_uncommitted") == {tp: 5}
    assert kp_end_offsets(bs, [tp], "read_committed") == {tp: 3}
    assert kp_end_offsets(bs, [tp], "read_uncommitted") == {tp: 5}
    # librdkafka's watermark query sends the consumer's isolation level
    assert ck_watermarks(bs, tp, "read_committed") == (0, 3)
    assert ck_watermarks(bs, tp, "read_uncommitted") == (0, 5)
    assert values_by_tp(ck_read(bs, [tp], "read_committed")) == {tp: [b"c0", b"c1"]}
    assert values_by_tp(kp_read(bs, [tp], "read_committed")) == {tp: [b"c0", b"c1"]}
    assert values_by_tp(ck_read(bs, [tp], "read_uncommitted")) == {tp: [b"c0", b"c1", b"o0",
                                                                      b"o1"]}
    # a non-transactional record after the open transaction stays behind the LSO too
    assert plain_produce(bs, topic, 0, [b"plain"]) == [5]
    assert list_offsets(bs, [tp], "read_committed") == {tp: 3}
    assert values_by_tp(ck_read(bs, [tp], "read_committed")) == {tp: [b"c0", b"c1"]}

    prod.commit_transaction(T)  # marker at 6
    assert list_offsets(bs, [tp], "read_committed") == {tp: 7}
    assert list_offsets(bs, [tp], "read_uncommitted") == {tp: 7}
    want = [b"c0", b"c1", b"o0", b"o1", b"plain"]
    rc = ck_read(bs, [tp], "read_committed")
    assert values_by_tp(rc) == {tp: want}
    assert [r.offset for r in rc[tp]] == [0, 1, 3, 4, 5]

    d3 = TDeliveries()
    prod.begin_transaction()
    send(prod, d3, topic, 0, b"a0")
    flushed(prod, d3)
    prod.abort_transaction(T)  # a0 at 7, abort marker 8
    assert list_offsets(bs, [tp], "read_committed") == {tp: 9}
    assert values_by_tp(ck_read(bs, [tp], "read_committed")) == {tp: want}
    assert values_by_tp(kp_read(bs, [tp], "read_committed")) == {tp: want}
    assert values_by_tp(ck_read(bs, [tp], "read_uncommitted")) == {tp: want + [b"a0"]}


def test_transactional_offsets_visible_only_on_commit(broker):
    """send_offsets_to_transaction (AddOffsetsToTxn + TxnOffsetCommit): the group's offset is
    not visible while the transaction is open, appears on commit, and an aborted transaction's
    offset never does."""
    bs = broker.bootstrap
    src, out, group = "offs-src", "offs-out", "offs-group"
    create_topic(bs, src, 2)
    create_topic(bs, out, 1)
    prod = txn_producer(bs, "offs-producer")
    prod.init_transactions(T)
    cons, meta = group_metadata(bs, group)
    try:
        d = TDeliveries()
        prod.begin_transaction()
        send(prod, d, out, 0, b"x")
        prod.send_offsets_to_transaction([TopicPartition(src, 0, 5), TopicPartition(src, 1, 7)],
                                         meta, T)
        flushed(prod, d)
        assert ck_group_offsets(bs, group, src, [0, 1]) == {}
        prod.commit_transaction(T)
        assert ck_group_offsets(bs, group, src, [0, 1]) == {0: 5, 1: 7}

        prod.begin_transaction()
        send(prod, d, out, 0, b"y")
        prod.send_offsets_to_transaction([TopicPartition(src, 0, 9)], meta, T)
        prod.abort_transaction(T)
        assert ck_group_offsets(bs, group, src, [0, 1]) == {0: 5, 1: 7}

        prod.begin_transaction()
        prod.send_offsets_to_transaction([TopicPartition(src, 1, 12)], meta, T)
        assert ck_group_offsets(bs, group, src, [0, 1]) == {0: 5, 1: 7}
        prod.commit_transaction(T)  # offsets only, no records
        assert ck_group_offsets(bs, group, src, [0, 1]) == {0: 5, 1: 12}
    finally:
        cons.close()
    assert values_by_tp(ck_read(bs, [(out, 0)], "read_committed")) == {(out, 0): [b"x"]}


# ---------------------------------------------------------------------------------------------
# timeouts and fencing


def fatal_error_of(calls):
    """Runs the callables in order until one raises KafkaException with a fatal error (an
    abortable error from commit is followed by abort, as an application would); returns
    (KafkaError, list of every error seen)."""
    seen = []
    for call in calls:
        try:
            call()
        except KafkaException as e:
            err = e.args[0]
            seen.append(err)
            if err.fatal():
                return err, seen
            if not err.txn_requires_abort():
                return err, seen
    return None, seen


FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


def kp_admin(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="txn-test-admin")


def test_hung_transaction_aborted_by_timeout(broker_factory):
    """A producer (transaction.timeout.ms=3000) begins a transaction, appends 3 records and
    stalls. The read_committed view is stuck before them (a later plain record is hidden too)
    until the broker's timeout scan (every 500 ms) aborts the transaction, no sooner than the
    timeout: then the plain record appears, the hung records never do, an abort marker follows,
    the producer epoch was bumped, and the stalled producer's commit fails."""
    b = broker_factory(overrides=[CLEANUP])
    bs, topic = b.bootstrap, "hung"
    create_topic(bs, topic, 1)
    tp = (topic, 0)
    timeout_ms = 3000
    hung = txn_producer(bs, "hung-txn", {"transaction.timeout.ms": timeout_ms})
    hung.init_transactions(T)
    began = time.monotonic()
    hung.begin_transaction()
    d = TDeliveries()
    for i in range(3):
        send(hung, d, topic, 0, b"hung-%d" % i)
    flushed(hung, d)
    assert plain_produce(bs, topic, 0, [b"after"]) == [3]
    assert list_offsets(bs, [tp], "read_committed") == {tp: 0}
    assert list_offsets(bs, [tp], "read_uncommitted") == {tp: 4}
    ka = kp_admin(bs)
    try:
        desc = ka.describe_transactions(["hung-txn"])["hung-txn"]
        assert desc.state == "Ongoing", desc
        assert desc.transaction_timeout_ms == timeout_ms
        assert values_by_tp(ck_read(bs, [tp], "read_committed")) == {tp: []}

        def visible():
            return values_by_tp(ck_read(bs, [tp], "read_committed"))[tp]

        seen = wait_until(visible, lambda: f"LSO still {list_offsets(bs, [tp], 'read_committed')}",
                          timeout=30, interval=0.3)
        elapsed = time.monotonic() - began
        print(f"hung transaction aborted after {elapsed:.1f}s (timeout {timeout_ms} ms)")
        assert seen == [b"after"]
        assert elapsed >= timeout_ms / 1000 - 0.1, "aborted before its timeout"
        assert list_offsets(bs, [tp], "read_uncommitted") == {tp: 5}  # abort marker at 4
        assert list_offsets(bs, [tp], "read_committed") == {tp: 5}
        after = ka.describe_transactions(["hung-txn"])["hung-txn"]
        assert after.state == "CompleteAbort", after
        assert after.producer_id == desc.producer_id
        assert after.producer_epoch == desc.producer_epoch + 1, (desc, after)
    finally:
        ka.close()
    with pytest.raises(KafkaException) as exc:
        hung.commit_transaction(T)
    print(f"stalled producer's commit: {exc.value.args[0]}")
    # whatever the client did after that, nothing of the hung transaction became visible
    rc = ck_read(bs, [tp], "read_committed")
    assert values_by_tp(rc) == {tp: [b"after"]}
    ru = values_by_tp(ck_read(bs, [tp], "read_uncommitted"))[tp]
    assert ru == [b"hung-0", b"hung-1", b"hung-2", b"after"]


def test_zombie_producer_is_fenced_confluent(broker):
    """P1 (transactional.id X) appends in a transaction; P2 with the same id runs
    init_transactions, which aborts P1's transaction and bumps the epoch; P2 commits. P1's
    further records are refused and its commit fails with a fatal fenced error; read_committed
    sees only P2's records, read_uncommitted P1's first records but never the late one."""
    bs, topic = broker.bootstrap, "zombie"
    create_topic(bs, topic, 1)
    tp = (topic, 0)
    p1 = txn_producer(bs, "zombie-id")
    p1.init_transactions(T)
    p1.begin_transaction()
    d1 = TDeliveries()
    for i in range(3):
        send(p1, d1, topic, 0, b"z1-%d" % i)
    flushed(p1, d1)

    p2 = txn_producer(bs, "zombie-id")
    p2.init_transactions(T)  # aborts P1's transaction: marker at 3
    assert list_offsets(bs, [tp], "read_committed") == {tp: 4}
    p2.begin_transaction()
    d2 = TDeliveries()
    send(p2, d2, topic, 0, b"p2-0")
    send(p2, d2, topic, 0, b"p2-1")
    flushed(p2, d2)
    p2.commit_transaction(T)
    assert [r.offset for _, r in d2.ok] == [4, 5]

    # no delivery callback here: confluent-kafka 2.16 raises the fatal error from flush(), and
    # with a callback pending it does so while running the callback (SystemError)
    p1.produce(topic, value=b"z1-late", partition=0)
    late_err = None
    try:
        left = p1.flush(T)
        assert left == 0
    except KafkaException as e:
        late_err = e.args[0]
    err, seen = fatal_error_of([lambda: p1.commit_transaction(T),
                                lambda: p1.abort_transaction(T)])
    print(f"zombie: flush error {late_err}; transactional call errors {seen}")
    assert err is not None, f"the zombie's commit did not fail fatally: {seen}"
    assert err.fatal(), err
    assert err.code() in FENCED, err

    assert values_by_tp(ck_read(bs, [tp], "read_committed")) == {tp: [b"p2-0", b"p2-1"]}
    ru = values_by_tp(ck_read(bs, [tp], "read_uncommitted"))[tp]
    assert ru == [b"z1-0", b"z1-1", b"z1-2", b"p2-0", b"p2-1"]
    assert list_offsets(bs, [tp], "read_uncommitted") == {tp: 7}
    # the new producer goes on working
    p2.begin_transaction()
    d3 = TDeliveries()
    send(p2, d3, topic, 0, b"p2-2")
    flushed(p2, d3)
    p2.commit_transaction(T)
    assert values_by_tp(ck_read(bs, [tp], "read_committed")) == {tp: [b"p2-0", b"p2-1",
                                                                    b"p2-2"]}


def test_zombie_producer_is_fenced_kafka_python(broker):
    """The same with kafka-python's KafkaProducer: the zombie's commit raises
    ProducerFencedError (or InvalidProducerEpochError)."""
    bs, topic = broker.bootstrap, "zombie-kp"
    create_topic(bs, topic, 1)
    tp = (topic, 0)
    p1 = kafka.KafkaProducer(bootstrap_servers=bs, transactional_id="zombie-kp", linger_ms=1)
    p2 = kafka.KafkaProducer(bootstrap_servers=bs, transactional_id="zombie-kp", linger_ms=1)
    try:
        p1.init_transactions()
        p1.begin_transaction()
        for i in range(3):
            p1.send(topic, value=b"z1-%d" % i, partition=0).get(timeout=T)
        p2.init_transactions()
        p2.begin_transaction()
        p2.send(topic, value=b"p2-0", partition=0).get(timeout=T)
        p2.commit_transaction()
        late = p1.send(topic, value=b"z1-late", partition=0)
        errors = []
        try:
            late.get(timeout=T)
        except kafka.errors.KafkaError as e:
            errors.append(e)
        else:
            raise AssertionError("the zombie's record was acknowledged")
        try:
            p1.commit_transaction()
        except kafka.errors.KafkaError as e:
            errors.append(e)
        else:
            raise AssertionError("the zombie's commit succeeded")
        print(f"zombie (kafka-python): {errors!r}")
        fenced = (kafka.errors.ProducerFencedError, kafka.errors.InvalidProducerEpochError)
        assert any(isinstance(e, fenced) for e in errors), errors
    finally:
        p1.close(timeout=5)
        p2.close(timeout=5)
    assert values_by_tp(kp_read(bs, [tp], "read_committed")) == {tp: [b"p2-0"]}
    assert values_by_tp(ck_read(bs, [tp], "read_committed")) == {tp: [b"p2-0"]}
    assert values_by_tp(ck_read(bs, [tp], "read_uncommitted")) == {
        tp: [b"z1-0", b"z1-1", b"z1-2", b"p2-0"]
    }


def test_transaction_timeout_above_broker_max_is_refused(broker_factory):
    """transaction.max.timeout.ms=10000: InitProducerId with a 20000 ms transaction timeout
    gets INVALID_TRANSACTION_TIMEOUT (both clients); 10000 itself is accepted."""
    b = broker_factory(overrides=["transaction.max.timeout.ms=10000"])
    bs = b.bootstrap
    too_long = txn_producer(bs, "too-long", {"transaction.timeout.ms": 20000})
    with pytest.raises(KafkaException) as exc:
        too_long.init_transactions(T)
    assert exc.value.args[0].code() == KafkaError.INVALID_TRANSACTION_TIMEOUT, exc.value
    ok = txn_producer(bs, "just-right", {"transaction.timeout.ms": 10000})
    ok.init_transactions(T)
    kp = kafka.KafkaProducer(bootstrap_servers=bs, transactional_id="too-long-kp",
                             transaction_timeout_ms=20000)
    try:
        # kafka-python 3.0.12 wraps the error code in a generic KafkaError ("Unexpected error in
        # InitProducerIdResponse: [Error 50] InvalidTransactionTimeoutError")
        with pytest.raises(kafka.errors.KafkaError) as kexc:
            kp.init_transactions()
        assert isinstance(kexc.value, kafka.errors.InvalidTransactionTimeoutError) or (
            "InvalidTransactionTimeoutError" in str(kexc.value)
        ), repr(kexc.value)
    finally:
        kp.close(timeout=5)


# ---------------------------------------------------------------------------------------------
# broker restarts


OPEN_TXN_MARK = "sluice-txn-open"


def open_txn_main(argv):
    """A producer in its own process that leaves a transaction open: init, begin, records,
    transactional offsets, flush; prints the records' offsets as one JSON line, then waits to
    be killed."""
    bootstrap, tid, timeout_ms, topic, partition, group, src, offset, *vals = argv
    prod = txn_producer(bootstrap, tid, {"transaction.timeout.ms": int(timeout_ms)})
    prod.init_transactions(T)
    prod.begin_transaction()
    d = TDeliveries()
    for v in vals:
        send(prod, d, topic, int(partition), v.encode())
    cons, meta = group_metadata(bootstrap, group)
    prod.send_offsets_to_transaction([TopicPartition(src, 0, int(offset))], meta, T)
    flushed(prod, d)
    print(json.dumps([r.offset for _, r in d.ok]), flush=True)
    time.sleep(120)


def spawn_open_txn(bootstrap, tid, timeout_ms, topic, partition, group, src, offset, vals,
                   log_path):
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, __file__, OPEN_TXN_MARK, bootstrap, tid, str(timeout_ms), topic,
             str(partition), group, src, str(offset), *vals],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        raise AssertionError(f"open-transaction producer failed: {open(log_path).read()[-2000:]}")
    return proc, json.loads(line)


@pytest.mark.parametrize("how", ["timeout", "new-producer", "commit-after-restart"])
def test_transactions_survive_broker_restart(broker_factory, tmp_path, how):
    """Committed and aborted transactions (records and group offsets), then one left open
    (records and pending group offsets), then a broker restart. After it the committed
    records and offsets are there, the aborted ones are not, the open transaction still holds
    the LSO back, and then it ends: aborted by the broker's timeout (timeout), aborted by a new
    producer with the same transactional.id (new-producer), or committed by its own producer,
    which outlived the restart (commit-after-restart)."""
    b = broker_factory(overrides=[CLEANUP])
    bs, topic, src, group = b.bootstrap, "rs", "rs-src", "rs-group"
    create_topic(bs, topic, 2)
    create_topic(bs, src, 1)
    tps = [(topic, 0), (topic, 1)]
    committed, everything = [], []
    prod = txn_producer(bs, "rs-done")
    prod.init_transactions(T)
    cons, meta = group_metadata(bs, group)
    for rnd, commit in enumerate([True, False, True, True]):
        d = TDeliveries()
        prod.begin_transaction()
        send(prod, d, topic, 0, f"rs{rnd}-0".encode())
        send(prod, d, topic, 1, f"rs{rnd}-1".encode())
        prod.send_offsets_to_transaction([TopicPartition(src, 0, 10 * (rnd + 1))], meta, T)
        flushed(prod, d)
        if commit:
            prod.commit_transaction(T)
            committed += d.ok
        else:
            prod.abort_transaction(T)
        everything += d.ok
    cons.close()
    del prod  # its connections closed: the clean stop need not wait for them
    assert ck_group_offsets(bs, group, src, [0]) == {0: 40}

    open_vals = ["open-0", "open-1"]
    killed = None
    if how == "commit-after-restart":
        opener = txn_producer(bs, "rs-open", {"transaction.timeout.ms": 60000})
        opener.init_transactions(T)
        opener.begin_transaction()
        od = TDeliveries()
        for v in open_vals:
            send(opener, od, topic, 0, v.encode())
        ocons, ometa = group_metadata(bs, group)
        opener.send_offsets_to_transaction([TopicPartition(src, 0, 500)], ometa, T)
        flushed(opener, od)
        ocons.close()
        open_offsets = [r.offset for _, r in od.ok]
    else:
        killed, open_offsets = spawn_open_txn(
            bs, "rs-open", 6000, topic, 0, group, src, 500, open_vals, tmp_path / "open.err"
        )
        killed.kill()
        killed.wait(TIMEOUT)
    open_recs = [(topic, Rec(0, o, None, v.encode())) for o, v in zip(open_offsets, open_vals)]
    everything += open_recs
    first_open = open_offsets[0]
    assert list_offsets(bs, [(topic, 0)], "read_committed") == {(topic, 0): first_open}
    assert ck_group_offsets(bs, group, src, [0]) == {0: 40}, "pending offsets visible"

    gc.collect()
    restarted = time.monotonic()
    b.restart()
    print(f"restart took {time.monotonic() - restarted:.1f}s")
    # the open transaction still holds partition 0's LSO; committed data is still there
    assert list_offsets(bs, [(topic, 0)], "read_committed") == {(topic, 0): first_open}
    assert ck_group_offsets(bs, group, src, [0]) == {0: 40}
    assert values_by_tp(ck_read(bs, [(topic, 1)], "read_committed")) == {
        (topic, 1): [r.value for t, r in committed if r.partition == 1]
    }

    if how == "timeout":
        after = plain_produce(bs, topic, 0, [b"after"])
        committed += [(topic, Rec(0, after[0], None, b"after"))]
        everything += [(topic, Rec(0, after[0], None, b"after"))]
        wait_until(
            lambda: list_offsets(bs, [(topic, 0)], "read_committed")[(topic, 0)] > first_open,
            lambda: "the open transaction was never aborted after the restart",
            timeout=30, interval=0.3,
        )
        want_offset = 40
    elif how == "new-producer":
        fresh = txn_producer(bs, "rs-open")
        fresh.init_transactions(T)
        d = TDeliveries()
        fresh.begin_transaction()
        send(fresh, d, topic, 0, b"fresh")
        fcons, fmeta = group_metadata(bs, group)
        fresh.send_offsets_to_transaction([TopicPartition(src, 0, 600)], fmeta, T)
        flushed(fresh, d)
        fresh.commit_transaction(T)
        fcons.close()
        committed += d.ok
        everything += d.ok
        want_offset = 600
    else:
        opener.commit_transaction(T)
        committed += open_recs
        want_offset = 500
    check_reads(bs, tps, committed, everything, "confluent")
    check_reads(bs, tps, committed, everything, "kafka-python")
    assert ck_group_offsets(bs, group, src, [0]) == {0: want_offset}
    ends_rc = list_offsets(bs, tps, "read_committed")
    assert ends_rc == list_offsets(bs, tps, "read_uncommitted")


# ---------------------------------------------------------------------------------------------
# consume-transform-produce: the bank-balance pipeline, exactly once


TRANSFORMER_MARK = "sluice-txn-transformer"
IN_TOPIC, OUT_TOPIC, BALANCE_GROUP = "transactions", "balance", "balance-calculator"


def transformer_main(argv):
    """The balance calculator of seed 004 made exactly-once. For each input record (a deposit
    to the account = partition) one transaction: the new balance (with the input offset) to
    `balance`, same partition, and the input offset + 1 to group balance-calculator, then
    commit. On start it first fences any previous instance (init_transactions with the same
    transactional.id aborts its open transaction), then resumes from the group's committed
    offsets with the balances of the last committed `balance` records, which must match them.

    With stall_at >= 0 the stall_at'th record of this run (from 0) is processed up to the
    middle of its transaction (balance record flushed, so appended; offsets sent, so pending)
    and then the process stalls, waiting to be killed.

    Prints JSON lines: {"resume": {p: [offset, balance]}}, {"c": [p, offset, balance]} after
    each commit, {"stalled": [p, offset]}, {"error": ...}, {"done": true}."""
    bootstrap, partitions, per_partition, seed, stall_at = argv
    partitions, per_partition, stall_at = int(partitions), int(per_partition), int(stall_at)
    rng = random.Random(int(seed))

    def out(**kw):
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    prod = txn_producer(bootstrap, "balance-calculator-0",
                        {"transaction.timeout.ms": 10000, "linger.ms": 0})
    prod.init_transactions(T)
    cons = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": BALANCE_GROUP,
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    })
    committed = cons.committed([TopicPartition(IN_TOPIC, p) for p in range(partitions)], T)
    start = {tp.partition: max(tp.offset, 0) for tp in committed}
    last = ck_read(bootstrap, [(OUT_TOPIC, p) for p in range(partitions)], "read_committed")
    balance = {}
    for p in range(partitions):
        recs = last[(OUT_TOPIC, p)]
        prev = json.loads(recs[-1].value) if recs else {"o": -1, "b": 0}
        if prev["o"] + 1 != start[p]:
            out(error=f"partition {p}: committed offset {start[p]} but the last committed "
                      f"balance is for input offset {prev['o']}")
            sys.exit(3)
        balance[p] = prev["b"]
    out(resume={p: [start[p], balance[p]] for p in range(partitions)})
    cons.assign([TopicPartition(IN_TOPIC, p, start[p]) for p in range(partitions)])
    nxt = dict(start)
    processed = 0
    while any(nxt[p] < per_partition for p in range(partitions)):
        m = cons.poll(0.5)
        if m is None:
            continue
        if m.error():
            out(consumer_error=str(m.error()))
            continue
        p, o = m.partition(), m.offset()
        if o != nxt[p]:
            out(error=f"partition {p}: got offset {o}, expected {nxt[p]}")
            sys.exit(3)
        balance[p] += int(m.value())
        prod.begin_transaction()
        prod.produce(OUT_TOPIC, value=json.dumps({"o": o, "b": balance[p]}).encode(),
                     key=m.key(), partition=p)
        if processed == stall_at:
            prod.flush(T)
        time.sleep(rng.uniform(0, 0.004))  # widen the window for a kill mid-transaction
        prod.send_offsets_to_transaction([TopicPartition(IN_TOPIC, p, o + 1)],
                                         cons.consumer_group_metadata(), T)
        if processed == stall_at:
            out(stalled=[p, o])
            time.sleep(120)
        processed += 1
        time.sleep(rng.uniform(0, 0.004))
        prod.commit_transaction(T)
        out(c=[p, o, balance[p]])
        nxt[p] = o + 1
    out(done=True)
    cons.close()


class TransformerProcess:
    def __init__(self, bootstrap, partitions, per_partition, seed, stall_at, log_path):
        self.lock = threading.Lock()
        self.lines = []
        self.log_path = log_path
        self.stderr = open(log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, TRANSFORMER_MARK, bootstrap, str(partitions),
             str(per_partition), str(seed), str(stall_at)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            ev["t"] = round(time.monotonic() - self.started, 2)
            with self.lock:
                self.lines.append(ev)

    def events(self, kind):
        with self.lock:
            return [ev[kind] for ev in self.lines if kind in ev]

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        self.stderr.close()

    def finish(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"transformer did not finish in {timeout}s: {self!r}")
        self._reader.join(TIMEOUT)
        self.stderr.close()

    def __repr__(self):
        with self.lock:
            last = self.lines[-3:]
        return (f"<transformer pid {self.proc.pid} rc={self.proc.poll()} last={last} "
                f"stderr={open(self.log_path, errors='replace').read()[-1500:]!r}>")


def test_consume_transform_produce_exactly_once_with_kills(broker, tmp_path):
    """Seed 004's pipeline: 3 accounts (partitions of `transactions`) with 20 deposits each;
    the transformer is SIGKILLed 4 times and restarted: twice at a random moment, twice while
    stalled in the middle of a transaction whose balance record is already appended and whose
    offset is pending. At the end `balance` (read_committed) holds exactly one record per
    deposit, in order, with the right running balance; the group's offsets are at the end; no
    restart lost a commit the previous run saw succeed; the stalled transactions' records are
    in the log, aborted."""
    bs = broker.bootstrap
    partitions, per_partition = 3, 20
    create_topic(bs, IN_TOPIC, partitions)
    create_topic(bs, OUT_TOPIC, partitions)
    rng = random.Random(4004)
    deposits = {p: [rng.randrange(-10, 11) for _ in range(per_partition)]
                for p in range(partitions)}
    p = Producer({"bootstrap.servers": bs, "linger.ms": 5, "enable.idempotence": True})
    d = TDeliveries()
    for acct in range(partitions):
        for i, v in enumerate(deposits[acct]):
            send(p, d, IN_TOPIC, acct, b"%d" % v, key=b"acct-%d-%d" % (acct, i))
    flushed(p, d)
    total = partitions * per_partition

    runs, kills = [], 4
    done_so_far = 0
    last_seen = {}  # partition -> last input offset a run saw committed
    stalled = []
    for k in range(kills + 1):
        # a run killed between polls of this test may go on a few commits past its target (on a
        # loaded machine, many): with too little input left for another interrupted run, the
        # next run is the last one and must finish
        last = k == kills or total - done_so_far < 16
        stall_at = rng.randint(3, 10) if not last and k % 2 == 1 else -1
        t = TransformerProcess(bs, partitions, per_partition, 100 + k, stall_at,
                               tmp_path / f"tr-{k}.err")
        runs.append(t)
        wait_until(lambda: t.events("resume") or t.proc.poll() is not None, lambda: repr(t))
        assert not t.events("error"), repr(t)
        (resume,) = t.events("resume")
        for part, o in last_seen.items():
            assert resume[str(part)][0] >= o + 1, (
                f"run {k} resumed partition {part} at {resume[str(part)][0]}, but run {k - 1} "
                f"had committed offset {o}"
            )
        if k > 0 and runs[k - 1].events("stalled"):
            # the aborted transaction's pending offset was not committed
            (sp, so), = runs[k - 1].events("stalled")
            assert resume[str(sp)][0] == so, (resume, sp, so)
        if stall_at >= 0:
            wait_until(lambda: t.events("stalled") or t.proc.poll() is not None,
                       lambda: repr(t))
            assert t.proc.poll() is None, f"transformer exited early: {t!r}"
            stalled += t.events("stalled")
            assert len(t.events("c")) == stall_at, repr(t)
            t.kill()
        elif not last:
            target = min(done_so_far + rng.randint(3, 8), total - 5)
            wait_until(lambda: done_so_far + len(t.events("c")) >= target
                       or t.proc.poll() is not None, lambda: repr(t))
            assert t.proc.poll() is None, f"transformer exited early: {t!r}"
            t.kill()
        else:
            t.finish(60)
            assert t.proc.returncode == 0, repr(t)
            assert t.events("done"), repr(t)
        assert not t.events("error"), repr(t)
        for part, o, _bal in t.events("c"):
            last_seen[part] = max(last_seen.get(part, -1), o)
        done_so_far = sum(o + 1 for o in last_seen.values())
        if last:
            break
    print("resume points:", [r.events("resume")[0] for r in runs])
    print("runs (s to resume, commits, s to last event):",
          [(r.lines[0]["t"], len(r.events("c")), r.lines[-1]["t"]) for r in runs])

    tps = [(OUT_TOPIC, q) for q in range(partitions)]
    rc = ck_read(bs, tps, "read_committed")
    for q in range(partitions):
        got = [json.loads(r.value) for r in rc[(OUT_TOPIC, q)]]
        assert [g["o"] for g in got] == list(range(per_partition)), (
            f"account {q}: balance records for input offsets {[g['o'] for g in got]}"
        )
        running, want = 0, []
        for v in deposits[q]:
            running += v
            want.append(running)
        assert [g["b"] for g in got] == want, f"account {q}: wrong balances"
    ru = ck_read(bs, tps, "read_uncommitted")
    aborted = sum(len(ru[tp]) for tp in tps) - total
    print(f"{total} balances committed; {aborted} balance records of aborted transactions "
          f"(stalled: {stalled})")
    # runs 1 and 3 stall mid-transaction (run 3 only if the input did not run short first)
    assert aborted >= len(stalled) >= 1, (aborted, stalled)
    for q, o in stalled:  # the stalled transaction's record is in the log but not committed
        assert any(json.loads(r.value)["o"] == o for r in ru[(OUT_TOPIC, q)])
    assert ck_group_offsets(bs, BALANCE_GROUP, IN_TOPIC, range(partitions)) == {
        q: per_partition for q in range(partitions)
    }


# ---------------------------------------------------------------------------------------------
# admin APIs (kafka-python: confluent-kafka 2.16's AdminClient has no transaction admin calls)


def test_list_and_describe_transactions_and_producers(broker):
    """ListTransactions (all, by state, by producer id), DescribeTransactions (state, producer
    id and epoch, timeout, start time, partitions; unknown ids) and DescribeProducers (last
    sequence, current transaction start offset) for an Empty, an Ongoing and a completed
    transactional id, before and after the open transaction commits."""
    bs, topic = broker.bootstrap, "adm"
    create_topic(bs, topic, 2)
    done = txn_producer(bs, "adm-done")
    done.init_transactions(T)
    done.begin_transaction()
    d = TDeliveries()
    send(done, d, topic, 0, b"done-0")
    flushed(done, d)
    done.commit_transaction(T)
    fresh = txn_producer(bs, "adm-fresh")
    fresh.init_transactions(T)
    opener = txn_producer(bs, "adm-open", {"transaction.timeout.ms": 45000})
    opener.init_transactions(T)
    began_ms = int(time.time() * 1000)
    opener.begin_transaction()
    od = TDeliveries()
    send(opener, od, topic, 1, b"open-0")
    send(opener, od, topic, 1, b"open-1")
    flushed(opener, od)
    ours = {"adm-done", "adm-fresh", "adm-open"}

    ka = kp_admin(bs)
    try:
        listed = {}
        for txns in ka.list_transactions().values():
            for t in txns:
                listed[t.transactional_id] = t
        assert ours <= set(listed), listed
        assert listed["adm-done"].state == "CompleteCommit"
        assert listed["adm-fresh"].state == "Empty"
        assert listed["adm-open"].state == "Ongoing"
        pids = {tid: listed[tid].producer_id for tid in ours}
        assert len(set(pids.values())) == 3 and all(v >= 0 for v in pids.values()), pids

        ongoing = {t.transactional_id for ts in ka.list_transactions(
            state_filters=["Ongoing"]).values() for t in ts}
        assert ongoing & ours == {"adm-open"}
        by_pid = {t.transactional_id for ts in ka.list_transactions(
            producer_id_filters=[pids["adm-done"]]).values() for t in ts}
        assert by_pid == {"adm-done"}

        desc = ka.describe_transactions(sorted(ours))
        o = desc["adm-open"]
        assert o.state == "Ongoing" and o.producer_id == pids["adm-open"], o
        assert o.producer_epoch >= 0 and o.transaction_timeout_ms == 45000, o
        assert o.topic_partitions == {kafka.TopicPartition(topic, 1)}, o
        now_ms = int(time.time() * 1000)
        assert began_ms - 1000 <= o.transaction_start_time_ms <= now_ms + 1000, o
        assert o.coordinator_id == 0
        c = desc["adm-done"]
        assert c.state == "CompleteCommit" and c.producer_id == pids["adm-done"], c
        assert c.topic_partitions == set(), c
        e = desc["adm-fresh"]
        assert e.state == "Empty" and e.topic_partitions == set(), e
        with pytest.raises(kafka.errors.TransactionalIdNotFoundError):
            ka.describe_transactions(["adm-never-used"])

        def producers():
            res = ka.describe_producers([kafka.TopicPartition(topic, p) for p in range(2)])
            return {
                tp.partition: {s.producer_id: s for s in st.active_producers}
                for tp, st in res.items()
            }

        prods = producers()
        assert set(prods[0]) == {pids["adm-done"]}, prods
        assert set(prods[1]) == {pids["adm-open"]}, prods
        s0 = prods[0][pids["adm-done"]]
        assert s0.last_sequence == 0 and s0.current_transaction_start_offset == -1, s0
        assert s0.producer_epoch == c.producer_epoch, (s0, c)
        s1 = prods[1][pids["adm-open"]]
        assert s1.last_sequence == 1, s1
        assert s1.current_transaction_start_offset == od.ok[0][1].offset == 0, s1
        assert s1.producer_epoch == o.producer_epoch, (s1, o)

        opener.commit_transaction(T)
        after = ka.describe_transactions(["adm-open"])["adm-open"]
        assert after.state == "CompleteCommit" and after.topic_partitions == set(), after
        s1 = producers()[1][pids["adm-open"]]
        assert s1.current_transaction_start_offset == -1 and s1.last_sequence == 1, s1
        ongoing = {t.transactional_id for ts in ka.list_transactions(
            state_filters=["Ongoing"]).values() for t in ts}
        assert not ongoing & ours
    finally:
        ka.close()


if __name__ == "__main__" and len(sys.argv) > 1:
    if sys.argv[1] == TRANSFORMER_MARK:
        transformer_main(sys.argv[2:])
    elif sys.argv[1] == OPEN_TXN_MARK:
        open_txn_main(sys.argv[2:])
