"""The seed's cluster lab (../shared/seeds/003_*: a four-node Kafka cluster, topics with
replication factors 2 and 3 and min.insync.replicas=2, 100,000 messages, two nodes shut down,
restarted, partitions back in sync), replayed on sluice with real clients.

Four sluice-server processes on 127.0.0.1: brokers 1, 2, 3 are the metadata quorum's voters,
broker 4 is a member only. The seed stopped two of four nodes; with three voters, stopping two
voters would lose the quorum's majority (no more fencing or leader elections), so the brokers
stopped here are the member-only broker 4 and one voter: the two remaining voters keep a
majority and the controller keeps working.

Topics as in the seed, each with min.insync.replicas=2 (topic config): Topic_One (1 partition,
RF 2), Topic_Three (3 partitions, RF 2), Topic_Four (4 partitions, RF 3).

1. 100,000 messages (the seed's JSON) produced with an idempotent acks=all confluent-kafka
   producer over the 8 partitions, read back with confluent-kafka and with kafka-python: in
   every partition exactly the messages produced to it, in produce order, at offsets 0, 1, ...
2. SIGTERM broker 4 (a controlled shutdown: it leaves every ISR at once). Every partition still
   has a leader; those with two live replicas still acknowledge acks=all (more messages,
   verified); those left with one (RF 2 partitions that had a replica on broker 4) refuse it
   with NOT_ENOUGH_REPLICAS (error 19), checked per partition from its replica set; everything
   is still readable, every message verified.
3. SIGTERM a voter as well (chosen from the placement so that some partitions keep two live
   replicas, some only one and, if the placement allows, some none). The same per-partition rule holds: two live replicas -> acks=all
   works, one -> NOT_ENOUGH_REPLICAS; an RF 2 partition with both replicas down is offline
   (leader -1, no unclean election) and keeps its data.
4. Restart both on their data dirs and ports: every ISR is full again (polled in Metadata),
   acks=all works on every partition, and every acknowledged message is present exactly once
   (the refused probes nowhere), read by both clients.

Run: SLUICE_SERVER_BIN=target/debug/sluice-server SLUICE_CLI_BIN=target/debug/sluice \
    .venv/bin/python -m pytest -q tests/clients/test_cluster_lab.py
Set SLUICE_LAB_MESSAGES for another message count (default 100000).
"""

import json
import os
import random
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from cluster_helpers import managed_cluster, partition_view, probe_acks_all, sigterm_and_check
from helpers import TIMEOUT, admin, consume, kp_consume
from test_cluster import VOTERS, replicas_in_sync, wait_until

MEMBER = 4
TOPICS = [("Topic_One", 1, 2), ("Topic_Three", 3, 2), ("Topic_Four", 4, 3)]
MESSAGES = int(os.environ.get("SLUICE_LAB_MESSAGES", "100000"))
MORE = 300  # messages per partition produced in each later stage
SETTLE = 20.0  # a stopped broker's fencing and leader moves reach every broker's view
REJOIN = 60.0  # restarted brokers catch up (tens of thousands of records) and rejoin ISRs


@pytest.fixture
def lab(request, tmp_path):
    yield from managed_cluster(request, tmp_path, node_ids=(*VOTERS, MEMBER))


def payload(i, rng):
    return json.dumps(
        {"id": i, "random_int": rng.randrange(100), "timestamp": int(time.time())}
    ).encode()


class Ledger:
    """What each partition must hold: its acknowledged values in offset order."""

    def __init__(self):
        self.expected = {(t, p): [] for t, n, _ in TOPICS for p in range(n)}

    def produce(self, bootstrap, targets, count_for, tag, rng):
        """Idempotent acks=all produce of `count_for(tp)` messages to each (topic, partition)
        of `targets`, interleaved; checks that every one is acknowledged at the next offset of
        its partition, in produce order, and records them."""
        p = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 20,
                "message.timeout.ms": 120000,
            }
        )
        sent = {tp: [] for tp in targets}
        acked = {tp: [] for tp in targets}
        failed = []

        def on_delivery(err, msg):
            if err is not None:
                failed.append((msg.topic(), msg.partition(), err))
            else:
                acked[(msg.topic(), msg.partition())].append((msg.offset(), msg.value()))

        plan = [tp for tp in targets for _ in range(count_for(tp))]
        rng.shuffle(plan)
        for i, (t, part) in enumerate(plan):
            v = payload(f"{tag}-{i}", rng)
            sent[(t, part)].append(v)
            while True:
                try:
                    p.produce(t, value=v, partition=part, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.1)
            p.poll(0)
        left = p.flush(180)
        assert left == 0, f"{left} messages unacknowledged"
        assert not failed, f"{len(failed)} deliveries failed: {failed[:5]}"
        for tp in targets:
            start = len(self.expected[tp])
            got = acked[tp]
            assert [o for o, _ in got] == list(range(start, start + len(sent[tp]))), (
                f"{tp}: offsets {got[:3]}... not consecutive from {start}"
            )
            assert [v for _, v in got] == sent[tp], f"{tp}: acknowledged out of produce order"
            self.expected[tp].extend(sent[tp])

    def verify(self, recs_by_topic, partitions, client):
        """Every partition in `partitions` holds exactly its expected values at 0, 1, ..."""
        for t, n, _ in TOPICS:
            got = {}
            for r in recs_by_topic[t]:
                got.setdefault(r.partition, []).append((r.offset, r.value))
            for p in range(n):
                if (t, p) not in partitions:
                    continue
                exp = self.expected[(t, p)]
                recs = got.get(p, [])
                assert [o for o, _ in recs] == list(range(len(exp))), (
                    f"{client}: {t}-{p}: offsets not 0..{len(exp) - 1} "
                    f"({len(recs)} records, first {recs[:2]})"
                )
                if [v for _, v in recs] != exp:
                    bad = next(i for i, (_, v) in enumerate(recs) if v != exp[i])
                    raise AssertionError(
                        f"{client}: {t}-{p}: offset {bad} holds {recs[bad][1]!r}, "
                        f"expected {exp[bad]!r}"
                    )

    def read_back(self, bootstrap, partitions, kafka_python=False):
        """Reads every partition of `partitions` whole with confluent-kafka (and kafka-python)
        and verifies it."""
        by_topic = {}
        for t, n, _ in TOPICS:
            ps = [p for p in range(n) if (t, p) in partitions]
            by_topic[t] = consume(bootstrap, t, ps, timeout=120) if ps else []
        self.verify(by_topic, partitions, "confluent-kafka")
        if kafka_python:
            by_topic = {}
            for t, n, _ in TOPICS:
                ps = [p for p in range(n) if (t, p) in partitions]
                total = sum(len(self.expected[(t, p)]) for p in ps)
                by_topic[t] = kp_consume(bootstrap, t, ps, total, timeout_ms=20000)
            self.verify(by_topic, partitions, "kafka-python")


def placement(bootstrap):
    """{(topic, partition): replicas} once every partition is in sync."""
    a = admin(bootstrap)
    out = {}
    for t, n, rf in TOPICS:
        ps = wait_until(
            f"{t} in sync", lambda: replicas_in_sync(a.list_topics(timeout=10), t, n, rf), 30
        )
        for p in ps:
            out[(t, p.id)] = list(p.replicas)
    return out


def wait_settled(lab, replicas, down):
    """Waits until every running broker's view has the brokers `down` out of every ISR and
    every partition led by a live replica (or offline, leader -1, if none is live); returns
    the last view."""

    def settled():
        for b in lab.running():
            views = {t: partition_view(b, t) for t, _, _ in TOPICS}
            for (t, p), reps in replicas.items():
                v = views[t][p]
                live = [r for r in reps if r not in down]
                if live:
                    if v["leader"] not in live or set(v["isr"]) & set(down):
                        return None
                    if sorted(v["isr"]) != sorted(live):
                        return None  # a live replica is in sync (nothing was lagging)
                elif v["leader"] != -1:
                    return None
        return views

    return wait_until(f"brokers {down} fenced everywhere", settled, SETTLE)


def check_stage(lab, ledger, replicas, down, rng, tag):
    """With brokers `down` stopped: partitions with >= 2 live replicas acknowledge more acks=all
    messages, partitions with one refuse acks=all with NOT_ENOUGH_REPLICAS, partitions with
    none are offline; every partition that has a leader reads back whole."""
    views = wait_settled(lab, replicas, down)
    bootstrap = lab.bootstrap()
    live = {tp: [r for r in reps if r not in down] for tp, reps in replicas.items()}
    healthy = [tp for tp, lv in live.items() if len(lv) >= 2]
    starved = [tp for tp, lv in live.items() if len(lv) == 1]
    offline = [tp for tp, lv in live.items() if not lv]
    print(f"{tag}: down {down}; acks=all on {healthy}; refused on {starved}; offline {offline}")
    assert healthy, "no partition kept two live replicas"
    assert starved, "no partition was left with a single replica"

    for t, p in offline:
        assert views[t][p]["leader"] == -1, (t, p, views[t][p])

    # min.insync.replicas=2 with an ISR of one: refused, as the broker's own error
    for t, p in starved:
        probe = f"refused-{tag}-{t}-{p}".encode()

        def refused():
            err = probe_acks_all(bootstrap, t, p, probe)
            assert err is not None, f"{t}-{p}: acks=all acknowledged with an ISR of one"
            # a client's metadata may lag the leader's move by a refresh: try again
            return err if err.code() == 19 else None

        err = wait_until(f"{t}-{p} refuses acks=all", refused, SETTLE)
        assert err.name() == "NOT_ENOUGH_REPLICAS", err

    ledger.produce(bootstrap, healthy, lambda tp: MORE, tag, rng)
    ledger.read_back(bootstrap, set(healthy) | set(starved))


def test_four_brokers_two_stopped_and_restarted(lab):
    rng = random.Random(3)
    t0 = time.monotonic()
    a = admin(lab.bootstrap())
    futures = a.create_topics(
        [NewTopic(t, n, rf, config={"min.insync.replicas": "2"}) for t, n, rf in TOPICS],
        operation_timeout=TIMEOUT,
    )
    for f in futures.values():
        f.result(TIMEOUT)
    replicas = placement(lab.bootstrap())
    print("placement:", replicas)
    assert any(MEMBER in reps for reps in replicas.values()), "broker 4 holds no replica"

    # 1. 100,000 acks=all messages, read back by both clients
    ledger = Ledger()
    tps = list(replicas)
    per, extra = divmod(MESSAGES, len(tps))
    counts = {tp: per + (1 if i < extra else 0) for i, tp in enumerate(tps)}
    ledger.produce(lab.bootstrap(), tps, counts.get, "m", rng)
    print(f"produced {MESSAGES} in {time.monotonic() - t0:.1f}s")
    ledger.read_back(lab.bootstrap(), set(tps), kafka_python=True)
    print(f"read back by both clients at {time.monotonic() - t0:.1f}s")

    # 2. the member-only broker stops
    sigterm_and_check(lab.brokers[MEMBER])
    check_stage(lab, ledger, replicas, [MEMBER], rng, "one-down")
    print(f"one down checked at {time.monotonic() - t0:.1f}s")

    # 3. a voter stops too (two voters stay: the quorum keeps its majority)
    def shape(v):
        live = [len([r for r in reps if r not in (MEMBER, v)]) for reps in replicas.values()]
        # both kinds needed; an offline partition (both RF 2 replicas down) is covered too
        return (any(n >= 2 for n in live) and any(n == 1 for n in live), 0 in live, -v)

    voter = max(VOTERS, key=shape)
    assert shape(voter)[0], f"no voter leaves both kinds of partitions: {replicas}"
    sigterm_and_check(lab.brokers[voter])
    check_stage(lab, ledger, replicas, [MEMBER, voter], rng, "two-down")
    print(f"two down (4 and {voter}) checked at {time.monotonic() - t0:.1f}s")

    # 4. both come back: full ISRs, acks=all everywhere, every acknowledged message once
    lab.brokers[voter].start()
    lab.brokers[MEMBER].start()
    lab.wait_registered([*VOTERS, MEMBER])
    a = admin(lab.bootstrap())
    for t, n, rf in TOPICS:
        wait_until(
            f"{t}: every ISR full again",
            lambda: replicas_in_sync(a.list_topics(timeout=10), t, n, rf),
            REJOIN,
        )
    print(f"ISRs full again at {time.monotonic() - t0:.1f}s")
    ledger.produce(lab.bootstrap(), tps, lambda tp: 50, "back", rng)
    ledger.read_back(lab.bootstrap(), set(tps), kafka_python=True)
    total = sum(len(v) for v in ledger.expected.values())
    print(f"{total} messages verified by both clients; {time.monotonic() - t0:.1f}s in all")
