"""Seeded fault injection on a three-broker cluster with real clients.

Three sluice-server processes on 127.0.0.1 (voters 1, 2, 3), each behind its own fault proxy
(faultproxy.py) that it advertises (`--advertised`, i.e. advertised.listeners): clients reach
broker X only through X's proxy, and so do the followers fetching from X (they connect to the
address X registered). The metadata quorum's links (controller.quorum.voters, which also carry
the brokers' heartbeats) are NOT proxied, so a cut proxy isolates X's client and replication
listener but X keeps its session with the controller. X's own fetches as a follower go through
the other brokers' proxies.

Topic `faults`: 3 partitions, RF 3, min.insync.replicas=2; replica.lag.time.max.ms is lowered to
3 s so that ISRs shrink and grow within a round. While the faults run:

- an idempotent acks=all confluent-kafka producer sends continuously (values `p:seq`, seq
  increasing) and records every acknowledged (partition, offset, value);
- a confluent-kafka consumer reads every partition up to the high watermark and records every
  (partition, offset, value) it ever saw;
- a schedule drawn from the seed runs R rounds, each one fault then a recovery: SIGKILL the
  leader of a partition and restart it after a while (sometimes before the session timeout
  fences it, sometimes after), SIGSTOP a broker for 1-6 s then SIGCONT (longer than the 3 s
  session timeout: it is fenced while frozen), cut all connections to a broker through its
  proxy for a while, or blackhole them (stall both directions); a proxy fault of 4 s or more on
  a leader must shrink its partitions' ISRs to the leader alone (its followers' fetches are cut
  too; replica.lag.time.max.ms is 3 s). After each round every broker
  must be registered again, the ISRs full, and the producer acknowledged on every partition
  again (a broker that never rejoins, or a hang, fails here).

Then everything is healed, the producer flushed and both clients stopped; once the ISRs are full
and every replica's log ends at the leader's high watermark:

- every acknowledged message is in its partition exactly once, at its acknowledged offset (read
  from the leaders with confluent-kafka); no value is written twice (idempotence), and each
  partition holds its values in produce order;
- nothing the consumer ever saw later changed value or vanished;
- the replicas' segment files (`<data>/faults-<p>/*.log`) hold byte-identical record batches
  below the high watermark, covering offsets 0..HW-1.

Rounds: SLUICE_FAULT_ROUNDS (default 8, each fault kind twice, under a minute); seed:
SLUICE_FAULT_SEED (default 1). A failure prints the seed, the schedule and the replay command.
Full run: SLUICE_FAULT_ROUNDS=200 SLUICE_SERVER_BIN=target/debug/sluice-server \
    SLUICE_CLI_BIN=target/debug/sluice .venv/bin/python -m pytest -q \
    tests/clients/test_cluster_faults.py
"""

import os
import random
import signal
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from cluster_helpers import managed_cluster, partition_view, segment_batches
from faultproxy import FaultProxy
from helpers import TIMEOUT, admin, consume
from test_cluster import VOTERS, replicas_in_sync, wait_until

ROUNDS = int(os.environ.get("SLUICE_FAULT_ROUNDS", "8"))
SEED = int(os.environ.get("SLUICE_FAULT_SEED", "1"))
TOPIC = "faults"
PARTITIONS = 3
OVERRIDES = ["replica.lag.time.max.ms=3000"]
KINDS = ("kill_leader", "pause", "cut", "blackhole")
RECOVER_TIMEOUT = 60.0  # a round's broker is back, caught up, in every ISR, producing again
SETTLE_TIMEOUT = 60.0
# a proxy fault at least this long must shrink the ISRs its broker leads (lag time 3 s)
SHRINK_AFTER = 4.0


@pytest.fixture
def faulty(request, tmp_path):
    """The three voters, each advertising its own fault proxy. Proxies are healed and paused
    brokers continued before the brokers are stopped; proxies are stopped last."""
    box = {}

    def target(i):
        c = box.get("c")
        b = c.brokers.get(i) if c is not None else None
        return b.port if b is not None else 0

    proxies = {}
    try:
        for i in VOTERS:
            proxies[i] = FaultProxy(f"broker-{i}", lambda i=i: target(i))
        gen = managed_cluster(
            request,
            tmp_path,
            VOTERS,
            overrides=OVERRIDES,
            advertised={i: p.address for i, p in proxies.items()},
            setup=lambda c: box.update(c=c),
        )
        c = next(gen)
        c.proxies = proxies
        try:
            yield c
        finally:
            for p in proxies.values():
                p.heal()
            for b in c.brokers.values():
                if b.running:
                    os.kill(b.proc.pid, signal.SIGCONT)
        next(gen, None)  # the cluster's teardown: SIGTERM, exit 0 checked
    finally:
        for p in proxies.values():
            p.stop()


class Workload:
    """The producer and the consumer threads and what they recorded."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = []  # (partition, offset, value)
        self.acked_per_partition = Counter()
        self.failed = []  # (partition, value, error)
        self.fatal = []
        self.unflushed = None
        self.seen = {}  # (partition, offset) -> value, first sighting
        self.changed = []  # (partition, offset, first value, later value)
        self.consumer_errors = Counter()
        self.sent = 0
        self.threads = [
            threading.Thread(target=self._produce, name="producer", daemon=True),
            threading.Thread(target=self._consume, name="consumer", daemon=True),
        ]
        self.crashed = []

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        """Stops both threads (the producer flushes first)."""
        self.stop.set()
        for t in self.threads:
            t.join(240)

    def check(self):
        assert not any(t.is_alive() for t in self.threads), "a client thread hangs"
        assert not self.fatal, f"fatal producer errors: {self.fatal}"
        assert not self.crashed, f"client thread failed: {self.crashed}"

    def _on_error(self, err):
        if err.fatal():
            self.fatal.append(err)

    def _produce(self):
        try:
            p = Producer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "message.timeout.ms": 180000,
                    "error_cb": self._on_error,
                }
            )

            def on_delivery(err, msg):
                with self.lock:
                    if err is None:
                        self.acked.append((msg.partition(), msg.offset(), msg.value()))
                        self.acked_per_partition[msg.partition()] += 1
                    else:
                        self.failed.append((msg.partition(), msg.value(), err))

            seq = 0
            while not self.stop.is_set() and not self.fatal:
                for _ in range(10):
                    part = seq % PARTITIONS
                    try:
                        p.produce(
                            TOPIC, value=f"{part}:{seq:09d}".encode(), partition=part,
                            on_delivery=on_delivery,
                        )
                    except BufferError:
                        break
                    except KafkaException as e:
                        if not e.args[0].fatal():
                            raise
                        self.fatal.append(e.args[0])  # seen by the next recover()
                        break
                    seq += 1
                self.sent = seq
                p.poll(0.02)  # about 500 messages a second while the cluster keeps up
            self.unflushed = p.flush(200)
        except Exception as e:  # noqa: BLE001 - reported by finish()
            self.crashed.append(repr(e))

    def _consume(self):
        try:
            c = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": "faults-observer",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                }
            )
            c.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
            while not self.stop.is_set():
                msg = c.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    self.consumer_errors[msg.error().name()] += 1
                    continue
                key = (msg.partition(), msg.offset())
                first = self.seen.setdefault(key, msg.value())
                if first != msg.value():
                    self.changed.append((*key, first, msg.value()))
            c.close()
        except Exception as e:  # noqa: BLE001 - reported by finish()
            self.crashed.append(repr(e))


def schedule(rng, rounds):
    """The rounds: every block of four is the four fault kinds in a seeded order."""
    out = []
    while len(out) < rounds:
        kinds = list(KINDS)
        rng.shuffle(kinds)
        for kind in kinds[: rounds - len(out)]:
            if kind == "kill_leader":
                out.append((kind, rng.randrange(PARTITIONS), round(rng.uniform(0.5, 6.0), 1)))
            else:
                out.append((kind, rng.choice(VOTERS), round(rng.uniform(1.0, 6.0), 1)))
    return out


def leader_of(cluster, partition):
    for b in cluster.running():
        try:
            leader = partition_view(b, TOPIC)[partition]["leader"]
        except Exception:  # noqa: BLE001 - ask another broker
            continue
        if leader in cluster.brokers:
            return leader
    return None


def run_fault(cluster, fault, rng, log):
    kind, arg, secs = fault
    if kind == "kill_leader":
        victim = leader_of(cluster, arg) or rng.choice(VOTERS)
        log.append(f"SIGKILL broker {victim} (leader of {TOPIC}-{arg}), restart after {secs}s")
        cluster.brokers[victim].kill()
        time.sleep(secs)  # the fault's duration
        cluster.brokers[victim].start()
    elif kind == "pause":
        b = cluster.brokers[arg]
        log.append(f"SIGSTOP broker {arg} for {secs}s")
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(secs)
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
    else:
        proxy = cluster.proxies[arg]
        b = cluster.brokers[arg]
        led = [p for p, v in partition_view(b, TOPIC).items() if v["leader"] == arg]
        log.append(f"{kind} the proxy of broker {arg} (leader of {led}) for {secs}s")
        started = time.monotonic()
        proxy.cut() if kind == "cut" else proxy.blackhole()
        try:
            if secs >= SHRINK_AFTER and led:
                # the followers' fetches go through the proxy too: once they have been cut
                # off for replica.lag.time.max.ms, broker X (asked directly, not through its
                # proxy) drops them from the ISR of every partition it leads
                def shrunk():
                    view = partition_view(b, TOPIC)
                    return all(
                        view[p]["leader"] != arg or view[p]["isr"] == [arg] for p in led
                    )

                wait_until(
                    f"broker {arg}'s ISRs shrink while its proxy is down", shrunk, secs + 10
                )
                log[-1] += f" (ISRs shrank to [{arg}] after {time.monotonic() - started:.1f}s)"
            time.sleep(max(0.0, secs - (time.monotonic() - started)))
        finally:
            proxy.heal()


def recover(cluster, work, what):
    """Every broker running and registered, the ISRs full, and new acknowledgements on every
    partition."""
    dead = {i: b.proc.returncode for i, b in cluster.brokers.items() if not b.running}
    assert not dead, f"after {what}: brokers exited: " + ", ".join(
        f"{i} (exit {code})\n{cluster.brokers[i].log_tail(30)}" for i, code in dead.items()
    )
    cluster.wait_registered(VOTERS)
    a = admin(cluster.bootstrap())
    wait_until(
        f"after {what}: every ISR full",
        lambda: replicas_in_sync(a.list_topics(TOPIC, timeout=10), TOPIC, PARTITIONS, 3),
        RECOVER_TIMEOUT,
    )
    if work.fatal:
        return  # the producer is gone: the final checks say what it lost
    with work.lock:
        before = dict(work.acked_per_partition)
    wait_until(
        f"after {what}: the producer acknowledged on every partition again",
        lambda: all(
            work.acked_per_partition[p] > before.get(p, 0) for p in range(PARTITIONS)
        ),
        RECOVER_TIMEOUT,
    )


def high_watermarks(bootstrap):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "faults-hw"})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10, cached=False)[1]
            for p in range(PARTITIONS)
        }
    finally:
        c.close()


def replica_logs(cluster, partition):
    """{broker: [(base, last, bytes)]} of the partition's segment files on every broker."""
    return {
        i: segment_batches(b.data_dir / f"{TOPIC}-{partition}") for i, b in cluster.brokers.items()
    }


def log_end(batches):
    return batches[-1][1] + 1 if batches else 0


def test_seeded_faults_keep_acknowledged_data(faulty):
    rng = random.Random(SEED)
    plan = schedule(rng, ROUNDS)
    log = []
    replay = (
        f"SLUICE_FAULT_SEED={SEED} SLUICE_FAULT_ROUNDS={ROUNDS} "
        "SLUICE_SERVER_BIN=target/debug/sluice-server SLUICE_CLI_BIN=target/debug/sluice "
        ".venv/bin/python -m pytest -q tests/clients/test_cluster_faults.py"
    )
    print(f"seed {SEED}, {ROUNDS} rounds: {plan}")
    try:
        check_faults(faulty, rng, plan, log)
        print("what ran:\n  " + "\n  ".join(log))
    except AssertionError as e:
        raise AssertionError(
            f"{e}\n\nseed {SEED}, {ROUNDS} rounds, schedule {plan}\nwhat ran:\n  "
            + "\n  ".join(log)
            + f"\nreplay: {replay}"
        ) from e


def check_faults(cluster, rng, plan, log):
    t0 = time.monotonic()
    a = admin(cluster.bootstrap())
    a.create_topics(
        [NewTopic(TOPIC, PARTITIONS, 3, config={"min.insync.replicas": "2"})],
        operation_timeout=TIMEOUT,
    )[TOPIC].result(TIMEOUT)
    wait_until(
        f"{TOPIC} in sync",
        lambda: replicas_in_sync(a.list_topics(TOPIC, timeout=10), TOPIC, PARTITIONS, 3),
        30,
    )
    bootstrap = ",".join(p.address for p in cluster.proxies.values())
    md = admin(bootstrap).list_topics(timeout=10)
    assert {i: b.port for i, b in md.brokers.items()} == {
        i: p.port for i, p in cluster.proxies.items()
    }, "brokers do not advertise their proxies"
    work = Workload(bootstrap)
    work.start()
    try:
        recover(cluster, work, "start")
        for n, fault in enumerate(plan):
            run_fault(cluster, fault, rng, log)
            recover(cluster, work, f"round {n} ({fault})")
            log[-1] += f"; recovered at {time.monotonic() - t0:.1f}s, {len(work.acked)} acked"
            if work.fatal:
                log.append(f"fatal producer error, rounds stop: {work.fatal}")
                break
    finally:
        # heal everything (the fixture does it again) and stop the clients
        for p in cluster.proxies.values():
            p.heal()
        for b in cluster.brokers.values():
            if b.running:
                os.kill(b.proc.pid, signal.SIGCONT)
        work.finish()
    print(
        f"{len(plan)} rounds in {time.monotonic() - t0:.1f}s: sent {work.sent}, "
        f"acked {len(work.acked)}, failed {len(work.failed)}, consumer saw {len(work.seen)}, "
        f"consumer errors {dict(work.consumer_errors)}"
    )
    assert not any(t.is_alive() for t in work.threads), "a client thread hangs"

    # settled: full ISRs, and every replica's log ends at the leader's high watermark
    cluster.wait_registered(VOTERS)
    a = admin(bootstrap)
    wait_until(
        "every ISR full after the heal",
        lambda: replicas_in_sync(a.list_topics(TOPIC, timeout=10), TOPIC, PARTITIONS, 3),
        SETTLE_TIMEOUT,
    )

    def converged():
        hws = high_watermarks(bootstrap)
        for p, hw in hws.items():
            ends = {i: log_end(bs) for i, bs in replica_logs(cluster, p).items()}
            if any(e != hw for e in ends.values()):
                return None
        return hws

    hws = wait_until(
        "every replica's log ends at the leader's high watermark",
        converged,
        SETTLE_TIMEOUT,
    )

    # 1. the partitions as the leaders serve them
    final = {}
    for r in consume(bootstrap, TOPIC, range(PARTITIONS), timeout=120):
        assert (r.partition, r.offset) not in final, f"offset read twice: {r}"
        final[(r.partition, r.offset)] = r.value
    for p in range(PARTITIONS):
        offsets = sorted(o for q, o in final if q == p)
        assert offsets == list(range(hws[p])), f"{TOPIC}-{p}: offsets are not 0..{hws[p] - 1}"
        seqs = [int(final[(p, o)].split(b":")[1]) for o in offsets]
        assert all(final[(p, o)].startswith(f"{p}:".encode()) for o in offsets), p
        assert seqs == sorted(seqs), f"{TOPIC}-{p}: values out of produce order"
    dups = [v for v, n in Counter(final.values()).items() if n > 1]
    assert not dups, f"{len(dups)} values written more than once, e.g. {dups[:5]}"
    lost = [(p, o, v) for p, o, v in work.acked if final.get((p, o)) != v]
    assert not lost, (
        f"{len(lost)} acknowledged messages missing or moved (HWs {hws}; highest acknowledged "
        f"offsets { {p: max(o for q, o, _ in work.acked if q == p) for p in hws} }), e.g. "
        + ", ".join(f"{p}@{o}={v!r} (log has {final.get((p, o))!r})" for p, o, v in lost[:5])
    )
    assert len(work.acked) == len({v for _, _, v in work.acked})

    # 2. what the consumer saw is still there, unchanged
    assert not work.changed, f"consumer saw offsets change value: {work.changed[:5]}"
    vanished = [(k, v) for k, v in work.seen.items() if final.get(k) != v]
    assert not vanished, f"{len(vanished)} consumed records changed or vanished: {vanished[:5]}"

    # 3. replicas hold the same bytes below the high watermark
    for p in range(PARTITIONS):
        hw = hws[p]
        logs = replica_logs(cluster, p)
        ref_id, ref = None, None
        for i, batches in sorted(logs.items()):
            below = [b for b in batches if b[1] < hw]
            covered = [(base, last) for base, last, _ in below]
            assert covered and covered[0][0] == 0 and covered[-1][1] == hw - 1, (
                f"{TOPIC}-{p} on broker {i}: batches {covered[:2]}..{covered[-2:]}, HW {hw}"
            )
            assert all(a[1] + 1 == b[0] for a, b in zip(covered, covered[1:])), (
                f"{TOPIC}-{p} on broker {i}: gap or overlap in the batches below the HW"
            )
            if ref is None:
                ref_id, ref = i, below
                continue
            if [b[2] for b in below] != [b[2] for b in ref]:
                k = next(
                    (k for k, (x, y) in enumerate(zip(below, ref)) if x[2] != y[2]),
                    min(len(below), len(ref)),
                )
                where = below[k][:2] if k < len(below) else ref[k][:2]
                raise AssertionError(
                    f"{TOPIC}-{p}: broker {i}'s log differs from broker {ref_id}'s at batch "
                    f"{k} (offsets {where}), HW {hw}"
                )
    # 4. the producer itself: no fatal error (e.g. a sequence the new leader does not expect),
    # every message answered, none failed
    work.check()
    assert work.unflushed == 0, f"{work.unflushed} messages never got a delivery report"
    assert not work.failed, f"{len(work.failed)} deliveries failed: {work.failed[:5]}"
    print(
        f"verified {len(work.acked)} acknowledged messages, {len(work.seen)} consumed records "
        f"and identical replica logs (HWs {hws}) in {time.monotonic() - t0:.1f}s"
    )
