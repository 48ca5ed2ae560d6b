"""Idempotent producers with real clients (issue 8): retries must not duplicate or reorder.

The retries are real: a fault-injecting proxy (txn_helpers.FaultProxy) between the clients and
the broker drops connections mid-run, in particular after the broker has appended a Produce
request but before its response reaches the client, so the client resends a batch the broker
already has. The broker is started with --advertised pointing at the proxy, so every client
connection (after the bootstrap) goes through it. Reading back (through the proxy with fault
injection off) must give every message exactly once, in the order it was produced, per
partition, at the offset its delivery report gave.

The restart tests hold the response of one Produce request in the proxy, restart (or SIGKILL)
the broker, and only then let the client retry: the batch is already in the log, and only
producer state that survived the restart lets the broker recognise the retry as a duplicate.
"""

import json
import time

import kafka
import pytest
from confluent_kafka import Producer
from kafka.admin import KafkaAdminClient

from helpers import TIMEOUT, Deliveries, Rec, create_topic
from txn_helpers import FaultProxy, ck_read, list_offsets, wait_until

PARTITIONS = 3


def make_proxy_broker(broker_factory, seed):
    """A FaultProxy and a broker advertising the proxy's address."""
    proxy = FaultProxy(seed=seed)
    b = broker_factory(advertised=proxy.advertised)
    proxy.target_port = b.port
    return proxy, b


def ck_idempotent(bootstrap, stats=None, **conf):
    """A confluent-kafka idempotent producer with fast reconnects and retries; with `stats` (a
    list), librdkafka's statistics reports are appended to it every 100 ms."""
    settings = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "batch.num.messages": 50,
        "linger.ms": 2,
        "retry.backoff.ms": 20,
        "retry.backoff.max.ms": 200,
        "reconnect.backoff.ms": 10,
        "reconnect.backoff.max.ms": 200,
        "message.timeout.ms": 60000,
    }
    settings.update(conf)
    if stats is not None:
        settings["statistics.interval.ms"] = 100
        settings["stats_cb"] = lambda s: stats.append(json.loads(s))
    return Producer(settings)


def tx_messages(stats):
    """Messages librdkafka transmitted, retransmissions included, as of the last report (the
    per-broker retry counters restart with every connection, this one does not)."""
    return stats[-1]["txmsgs"]


def produce_numbered(prod, topic, tag, n, partitions=PARTITIONS, d=None):
    """Produces values `tag-i` (i < n) to partition i % partitions; returns (Deliveries,
    {partition: [values in produce order]})."""
    d = d or Deliveries()
    sent = {p: [] for p in range(partitions)}
    for i in range(n):
        v = f"{tag}-{i:05d}".encode()
        p = i % partitions
        while True:
            try:
                prod.produce(topic, value=v, key=str(i).encode(), partition=p,
                             on_delivery=d.callback)
                break
            except BufferError:
                prod.poll(0.05)
        sent[p].append(v)
        prod.poll(0)
    return d, sent


def flush_all(prod, d, expected, timeout=60):
    left = prod.flush(timeout)
    assert left == 0, f"{left} messages undelivered after {timeout}s"
    assert not d.failed, f"{len(d.failed)} delivery failures, e.g. {d.failed[:5]}"
    assert len(d.ok) == expected, (len(d.ok), expected)


def check_exactly_once(bootstrap, topic, sent, deliveries, partitions=PARTITIONS):
    """Reads every partition back: per partition exactly the values sent, in produce order,
    at offsets 0.. without gaps (nothing appended twice, even where nobody reads it), each at
    the offset its delivery report gave; the end offsets are the counts."""
    got = ck_read(bootstrap, [(topic, p) for p in range(partitions)], "read_uncommitted")
    delivered = {}
    for r in deliveries.ok:
        assert (r.partition, r.value) not in delivered, f"two delivery reports for {r.value}"
        delivered[(r.partition, r.value)] = r.offset
    for p in range(partitions):
        recs = got[(topic, p)]
        vals = [r.value for r in recs]
        if vals != sent[p]:
            dups = sorted({v for v in vals if vals.count(v) > 1})
            missing = sorted(set(sent[p]) - set(vals))
            raise AssertionError(
                f"partition {p}: {len(vals)} records for {len(sent[p])} sent; "
                f"duplicated {len(dups)} {dups[:5]}; missing {len(missing)} {missing[:5]}; "
                f"first difference at index "
                f"{next((i for i, (a, b) in enumerate(zip(vals, sent[p])) if a != b), None)}"
            )
        assert [r.offset for r in recs] == list(range(len(recs))), f"partition {p} offsets"
        wrong = [(r.value, r.offset, delivered[(p, r.value)]) for r in recs
                 if delivered[(p, r.value)] != r.offset]
        assert not wrong, f"partition {p}: delivery report offset != log offset: {wrong[:5]}"
    ends = list_offsets(bootstrap, [(topic, p) for p in range(partitions)], "read_uncommitted")
    assert ends == {(topic, p): len(sent[p]) for p in range(partitions)}


def test_confluent_idempotent_producer_exactly_once_through_dropped_connections(broker_factory):
    """5000 messages from an idempotent confluent-kafka producer through the fault proxy:
    Produce requests cut in half, responses dropped after the broker appended, responses cut
    in half. Every message lands exactly once, in order."""
    proxy, b = make_proxy_broker(broker_factory, seed=8)
    try:
        topic, n = "idem-faults", 5000
        create_topic(b.bootstrap, topic, PARTITIONS)
        proxy.set_faults(cut_request=0.02, drop_response=0.05, cut_response=0.02,
                         first_after=3, max_faults=25)
        stats = []
        prod = ck_idempotent(proxy.advertised, stats)
        started = time.monotonic()
        d, sent = produce_numbered(prod, topic, "m", n)
        flush_all(prod, d, n)
        proxy.faults_off()
        took = time.monotonic() - started
        # a statistics report issued after the last delivery
        before = len(stats)
        wait_until(lambda: (prod.poll(0.1), len(stats) > before + 1)[1],
                   lambda: "no librdkafka statistics", timeout=10)
        print(f"confluent: {n} messages in {took:.1f}s through {proxy.stats['connections']} "
              f"proxy connections; faults {dict(proxy.stats)}; "
              f"librdkafka sent {tx_messages(stats)} messages; "
              f"produce requests {proxy.requests_seen[0]}")
        assert proxy.faults_total() > 0
        assert proxy.stats["drop_response"] > 0, "no response was dropped after an append"
        assert tx_messages(stats) > n, "the client never resent a message"
        check_exactly_once(b.bootstrap, topic, sent, d)
    finally:
        proxy.close()


def test_kafka_python_idempotent_producer_exactly_once_through_dropped_connections(
    broker_factory,
):
    """The same with kafka-python 3.0.12's idempotent producer (its default)."""
    proxy, b = make_proxy_broker(broker_factory, seed=80)
    try:
        topic, n = "idem-faults-kp", 2000
        create_topic(b.bootstrap, topic, PARTITIONS)
        prod = kafka.KafkaProducer(
            bootstrap_servers=proxy.advertised,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            batch_size=1024,  # many small Produce requests
            retry_backoff_ms=20,
            reconnect_backoff_ms=10,
            reconnect_backoff_max_ms=200,
            request_timeout_ms=10000,
            delivery_timeout_ms=60000,
        )
        try:
            # the first request (InitProducerId, Metadata) goes through before faults start
            prod.partitions_for(topic)
            proxy.set_faults(cut_request=0.02, drop_response=0.05, cut_response=0.02,
                             first_after=3, max_faults=25)
            futures, sent = [], {p: [] for p in range(PARTITIONS)}
            started = time.monotonic()
            for i in range(n):
                v = f"k-{i:05d}".encode()
                futures.append(prod.send(topic, value=v, key=str(i).encode(),
                                         partition=i % PARTITIONS))
                sent[i % PARTITIONS].append(v)
            prod.flush(60)
            proxy.faults_off()
            d = Deliveries()
            for f, i in zip(futures, range(n)):
                assert f.is_done, f"message {i} not done after flush"
                if f.failed():
                    d.failed.append((repr(f.exception), i))
                else:
                    md = f.value
                    d.ok.append(Rec(md.partition, md.offset, None, f"k-{i:05d}".encode()))
            print(f"kafka-python: {n} messages in {time.monotonic() - started:.1f}s; "
                  f"faults {dict(proxy.stats)}; produce requests {proxy.requests_seen[0]}")
            assert not d.failed, f"{len(d.failed)} failed, e.g. {d.failed[:5]}"
        finally:
            prod.close(timeout=10)
        assert proxy.stats["drop_response"] > 0
        check_exactly_once(b.bootstrap, topic, sent, d)
    finally:
        proxy.close()


def describe_producers(bootstrap, topic, partitions=PARTITIONS):
    """{partition: [(producer_id, producer_epoch, last_sequence), ...]} via kafka-python's
    KafkaAdminClient.describe_producers (DescribeProducers)."""
    a = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="idem-admin")
    try:
        res = a.describe_producers([kafka.TopicPartition(topic, p) for p in range(partitions)])
        return {
            tp.partition: sorted(
                (s.producer_id, s.producer_epoch, s.last_sequence) for s in st.active_producers
            )
            for tp, st in res.items()
        }
    finally:
        a.close()


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_producer_sequence_state_survives_broker_restart(broker_factory, how):
    """Phase 1 is acknowledged; DescribeProducers shows one producer per partition with
    last_sequence = count - 1. The next Produce request is appended by the broker but its
    response is withheld by the proxy; the broker restarts (clean stop, or SIGKILL: the batch
    was acknowledged by an fdatasync before the response was sent) and reports the producer
    with the held batch's sequence; only then the client retries the batch, which must be
    acknowledged as a duplicate (at its original offset) and not appended again. Phase 2
    continues with the same producer id and epoch, and everything is there exactly once."""
    proxy, b = make_proxy_broker(broker_factory, seed=88)
    try:
        topic = f"idem-{how}"
        create_topic(b.bootstrap, topic, PARTITIONS)
        prod = ck_idempotent(proxy.advertised)
        d, sent = produce_numbered(prod, topic, "a", 300)
        flush_all(prod, d, 300)
        before = describe_producers(b.bootstrap, topic)
        assert all(len(before[p]) == 1 for p in range(PARTITIONS)), before
        (pid, epoch, _), = before[0]
        assert before == {p: [(pid, epoch, 99)] for p in range(PARTITIONS)}, before

        # one batch (partition 0) appended, its response withheld
        proxy.hold_next_response()
        held = Deliveries()
        prod.produce(topic, value=b"held", partition=0, on_delivery=held.callback)
        prod.poll(0)
        assert proxy.held.wait(TIMEOUT), "the held Produce request never got a response"
        sent[0].append(b"held")
        if how == "restart":
            b.restart()
        else:
            b.kill()
            b.start()
        after = describe_producers(b.bootstrap, topic)
        assert after == {0: [(pid, epoch, 100)], 1: [(pid, epoch, 99)], 2: [(pid, epoch, 99)]}, (
            f"producer state after the {how}: {after}"
        )
        assert not held.ok and not held.failed, "the held message was reported early"
        proxy.release()
        d2, sent2 = produce_numbered(prod, topic, "b", 300)
        flush_all(prod, d2, 300)
        wait_until(lambda: (prod.poll(0.1), held.ok or held.failed)[1],
                   lambda: "no delivery report for the held message", timeout=TIMEOUT)
        assert not held.failed, held.failed
        assert len(held.ok) == 1 and held.ok[0].offset == 100, held.ok
        for p in range(PARTITIONS):
            sent[p].extend(sent2[p])
        d.ok.extend(held.ok + d2.ok)
        check_exactly_once(b.bootstrap, topic, sent, d)
        final = describe_producers(b.bootstrap, topic)
        assert final == {0: [(pid, epoch, 200)], 1: [(pid, epoch, 199)],
                         2: [(pid, epoch, 199)]}, final
    finally:
        proxy.close()
