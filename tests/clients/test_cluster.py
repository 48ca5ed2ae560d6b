"""Cluster mode with real clients: three sluice-server processes on 127.0.0.1 that are each a
broker and a voter of one metadata quorum (controller.quorum.voters), plus a fourth that is a
member only.

Covers: topics with replication factors 3 and 2 placed over the brokers (confluent-kafka
AdminClient, Metadata's replicas/ISR/leaders, `sluice topic describe`, `sluice cluster quorum`
and `cluster info`); 1,000 acks=1 messages to an RF 3 topic read back by confluent-kafka and
kafka-python; SIGKILL of a partition leader (a new leader from the ISR within the session
timeout, the dead broker offline and out of the ISR, produce keeps working, the broker
registers again after a restart on its data dir and ports and rejoins the ISR); a broker
outside the voters joining; acks=all on an RF 3 partition.

Each test gets a fresh cluster (free ports, fresh data dirs, `--cores 1`); at the end every
broker still running is sent SIGTERM and must exit 0, and none is left behind whatever happens.
"""

import atexit
import gc
import json
import os
import random
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from conftest import Broker, server_binary
from helpers import (
    TIMEOUT,
    admin,
    by_partition,
    consume,
    kp_consume,
    produce_all,
    producer,
)

REPO = Path(__file__).resolve().parents[2]
CLI = Path(os.environ.get("SLUICE_CLI_BIN", REPO / "target" / "debug" / "sluice"))
VOTERS = (1, 2, 3)
# broker.session.timeout.ms is 3 s: a dead broker is fenced within that plus an election
FAILOVER_TIMEOUT = 15.0
JOIN_TIMEOUT = 15.0

# every broker process started here, so that none outlives the test run (even on ^C)
_LIVE = []


@atexit.register
def _kill_leftovers():
    for b in _LIVE:
        if b.proc is not None and b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait()


def free_ports(n):
    """`n` distinct ports nobody listens on right now, from below the kernel's ephemeral range:
    a voter's quorum port is only bound when its broker starts, and a port from the ephemeral
    range could meanwhile be handed to another broker's `--listen 127.0.0.1:0` or to an
    outgoing connection (seen in CI: broker 1's Kafka listener took voter 2's quorum port)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    low = max(low, 2048)
    ports = []
    for p in random.sample(range(1024, low), min(low - 1024, 64 * n)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        ports.append(p)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"no {n} free ports below {low}")


def wait_until(what, predicate, timeout):
    """Polls `predicate` until it returns something truthy (returned); fails after `timeout`
    with the last value or exception."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - a broker may be between states
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")
        time.sleep(0.1)


def sluice(broker, *args, check=True):
    """Runs the `sluice` CLI against one broker; returns its stdout."""
    if not CLI.is_file():
        pytest.exit(f"sluice CLI not found at {CLI}: set SLUICE_CLI_BIN", returncode=2)
    r = subprocess.run(
        [str(CLI), "--bootstrap-server", broker.bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert r.returncode == 0, f"sluice {' '.join(args)}: exit {r.returncode}\n{r.stderr}"
    return r.stdout


def sluice_json(broker, *args):
    return json.loads(sluice(broker, *args, "--output", "json"))


class Cluster:
    """Brokers sharing one metadata quorum; `brokers` by node id."""

    def __init__(self, tmp_path, made):
        self.tmp = tmp_path
        ports = free_ports(len(VOTERS))
        self.voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in zip(VOTERS, ports))
        self.brokers = {}
        self.made = made  # every Broker in start order (the report hook prints their logs)

    def add(self, node_id, start=True):
        logs = self.tmp / f"logs-{node_id}"
        logs.mkdir()
        b = Broker(
            server_binary(),
            self.tmp / f"data-{node_id}",
            logs,
            cores=1,
            overrides=[f"node.id={node_id}", f"controller.quorum.voters={self.voters}"],
        )
        self.brokers[node_id] = b
        self.made.append(b)
        _LIVE.append(b)
        if start:
            b.start()
        return b

    def running(self, exclude=()):
        return [b for i, b in sorted(self.brokers.items()) if b.running and i not in exclude]

    def bootstrap(self, exclude=()):
        """host:port of every running broker (but `exclude`), for clients."""
        return ",".join(b.bootstrap for b in self.running(exclude))

    def view(self, via):
        """(live broker ids, controller id, cluster id) in DescribeCluster from broker `via`."""
        info = sluice_json(self.brokers[via], "cluster", "info")
        return sorted(b["id"] for b in info["brokers"]), info["controller_id"], info["cluster_id"]

    def wait_registered(self, ids, via=None):
        """Waits until brokers `ids` are the live ones in the view of every running broker
        (or of `via`), with a cluster id and a controller among them: each broker's copy of
        the metadata image lags the quorum by up to a heartbeat, and a client told of a
        controller that is not in the broker list (librdkafka's admin client) waits for it
        until its next metadata refresh."""
        ids = sorted(ids)
        vias = [via] if via is not None else [i for i, b in self.brokers.items() if b.running]

        def seen():
            for v in vias:
                brokers, controller, cluster_id = self.view(v)
                if brokers != ids or controller not in ids or not cluster_id:
                    return None
            return True

        wait_until(f"brokers {ids} registered (seen from {vias})", seen, JOIN_TIMEOUT)

    def stop_all(self):
        """SIGTERM to every running broker at once (members first); returns
        {id: exit code} of those that were running. Never leaves a process behind."""
        gc.collect()  # clients held by reference cycles keep connections open
        codes = {}
        order = sorted(self.brokers.items(), key=lambda kv: (kv[0] in VOTERS, kv[0]))
        try:
            for i, b in order:
                if b.running:
                    b.ended = True
                    b.proc.terminate()
                    codes[i] = None
            deadline = time.monotonic() + 15
            for i in codes:
                b = self.brokers[i]
                try:
                    codes[i] = b.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    codes[i] = None
        finally:
            for b in self.brokers.values():
                b.kill()
        return codes


@pytest.fixture
def cluster(request, tmp_path):
    """Three brokers that are the quorum's voters (ids 1, 2, 3), all registered. At the end
    every broker still running must exit 0 on SIGTERM."""
    made = []
    request.node.factory_brokers = made  # conftest's report hook shows their logs on failure
    c = Cluster(tmp_path, made)
    try:
        for i in VOTERS:
            c.add(i)
        c.wait_registered(VOTERS)
    except BaseException:
        c.stop_all()
        raise
    yield c
    died = [
        i
        for i, b in c.brokers.items()
        if b.proc is not None and not b.running and not b.ended
    ]
    codes = c.stop_all()
    bad = {i: code for i, code in codes.items() if code != 0}
    assert not bad, "brokers did not exit cleanly on SIGTERM: " + ", ".join(
        f"{i} (exit {code})\n{c.brokers[i].log_tail(30)}" for i, code in bad.items()
    )
    if died and not getattr(request.node, "failed_call", False):
        pytest.fail(f"brokers {died} died during the test")


def create_topics(bootstrap, topics):
    """Creates (name, partitions, replication factor) topics with confluent-kafka."""
    a = admin(bootstrap)
    futures = a.create_topics(
        [NewTopic(n, p, rf) for n, p, rf in topics], operation_timeout=TIMEOUT
    )
    for f in futures.values():
        f.result(TIMEOUT)


def replicas_in_sync(md, topic, partitions, rf):
    """The topic's partitions from confluent-kafka's metadata once each one has a leader and a
    full ISR of `rf` replicas, else None."""
    t = md.topics.get(topic)
    if t is None or t.error is not None or len(t.partitions) != partitions:
        return None
    ps = [t.partitions[p] for p in range(partitions)]
    for p in ps:
        if p.error is not None or len(p.replicas) != rf or sorted(p.isrs) != sorted(p.replicas):
            return None
        if p.leader not in p.replicas:
            return None
    return ps


PARTITION_LINE = re.compile(
    r"^\tTopic: (\S+)\tPartition: (\d+)\tLeader: (\d+)\tReplicas: ([\d,]+)\tIsr: ([\d,]+)$"
)


def test_replicated_topics_are_spread_over_the_brokers(cluster):
    """RF 3 and RF 2 topics: every partition has its replicas on distinct brokers, a full ISR
    and a leader among them; leaders of the RF 3 topic are spread over all three brokers. The
    CLI shows the same, and the quorum of voters 1, 2, 3."""
    create_topics(cluster.bootstrap(), [("rf3", 4, 3), ("rf2", 3, 2)])
    a = admin(cluster.bootstrap())
    md = a.list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    assert md.controller_id in VOTERS
    rf3 = wait_until(
        "rf3 in sync",
        lambda: replicas_in_sync(a.list_topics(timeout=10), "rf3", 4, 3),
        10,
    )
    rf2 = wait_until(
        "rf2 in sync",
        lambda: replicas_in_sync(a.list_topics(timeout=10), "rf2", 3, 2),
        10,
    )
    for p in rf3 + rf2:
        assert len(set(p.replicas)) == len(p.replicas), p.replicas
        assert set(p.replicas) <= {1, 2, 3}
    assert {p.leader for p in rf3} == {1, 2, 3}, [p.leader for p in rf3]

    # `sluice topic describe` (kafka-topics.sh --describe) from each broker agrees, once its
    # copy of the image has the topic (within a heartbeat)
    for b in cluster.running():
        text = wait_until(
            f"rf3 known to {b.bootstrap}",
            lambda: sluice(b, "topic", "describe", "rf3", check=False),
            5,
        )
        rows = [PARTITION_LINE.match(line) for line in text.splitlines()[1:]]
        assert all(rows) and len(rows) == 4, text
        by_p = {int(m[2]): m for m in rows}
        for p in rf3:
            m = by_p[p.id]
            assert int(m[3]) == p.leader, text
            assert [int(x) for x in m[4].split(",")] == p.replicas, text
            assert sorted(int(x) for x in m[5].split(",")) == sorted(p.replicas), text
        assert "ReplicationFactor: 3" in text.splitlines()[0], text

    # `sluice cluster quorum` (kafka-metadata-quorum.sh describe --status)
    status = sluice(cluster.brokers[2], "cluster", "quorum")
    lines = status.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ClusterId", "LeaderId", "LeaderEpoch", "HighWatermark", "MaxFollowerLag",
        "MaxFollowerLagTimeMs", "CurrentVoters", "CurrentObservers",
    ], status
    leader = int(re.search(r"^LeaderId:\s+(\d+)$", status, re.M)[1])
    assert leader in VOTERS, status
    assert "CurrentVoters:          [1,2,3]" in lines, status
    assert "CurrentObservers:       []" in lines, status
    assert int(re.search(r"^LeaderEpoch:\s+(\d+)$", status, re.M)[1]) >= 1, status
    assert int(re.search(r"^HighWatermark:\s+(\d+)$", status, re.M)[1]) > 0, status
    cluster_id = re.search(r"^ClusterId:\s+(\S+)$", status, re.M)[1]
    assert cluster_id == md.cluster_id

    # --replication: the leader first, then its two followers
    table = sluice(cluster.brokers[3], "cluster", "quorum", "--replication").splitlines()
    assert table[0].split() == [
        "NodeId", "LogEndOffset", "Lag", "LastFetchTimestamp", "LastCaughtUpTimestamp", "Status",
    ]
    rows = [r.split() for r in table[1:]]
    assert [r[5] for r in rows] == ["Leader", "Follower", "Follower"], table
    assert sorted(int(r[0]) for r in rows) == [1, 2, 3], table
    now = time.time() * 1000
    for r in rows:
        assert int(r[1]) > 0, table
        assert now - 60_000 < int(r[3]) <= now + 1000, table
    q = sluice_json(cluster.brokers[1], "cluster", "quorum")
    assert q["current_voters"] == [1, 2, 3]
    assert q["leader_id"] in VOTERS
    assert [n["id"] for n in q["nodes"]] == [1, 2, 3]
    assert all(n["endpoints"][0].startswith("CONTROLLER://127.0.0.1:") for n in q["nodes"])

    # DescribeCluster: every broker and the controller
    info = sluice_json(cluster.brokers[1], "cluster", "info")
    assert [b["id"] for b in info["brokers"]] == [1, 2, 3]
    assert {b["port"] for b in info["brokers"]} == {b.port for b in cluster.running()}
    assert info["controller_id"] in VOTERS
    assert info["cluster_id"] == cluster_id


def test_acks_1_round_trip_on_a_replicated_topic(cluster):
    """1,000 keyed messages with acks=1 to a 4-partition RF 3 topic, read back whole by
    confluent-kafka and kafka-python: the same records at the acknowledged offsets."""
    create_topics(cluster.bootstrap(), [("rt", 4, 3)])
    wait_until(
        "rt in sync",
        lambda: replicas_in_sync(admin(cluster.bootstrap()).list_topics(timeout=10), "rt", 4, 3),
        10,
    )
    n = 1000
    keys = [f"k{i % 37}".encode() for i in range(n)]
    vals = [f"value-{i:04d}-".encode() * 3 for i in range(n)]
    p = producer(cluster.bootstrap(), acks=1)
    d = produce_all(p, "rt", vals, keys=keys)
    acked = {(r.partition, r.offset): (r.key, r.value) for r in d.ok}
    assert len(acked) == n
    parts = by_partition(d.ok)
    assert len(parts) > 1, "keys spread over partitions"
    for recs in parts.values():
        assert sorted(r.offset for r in recs) == list(range(len(recs)))

    got = consume(cluster.bootstrap(), "rt", range(4))
    assert {(r.partition, r.offset): (r.key, r.value) for r in got} == acked
    assert len(got) == n

    kp = kp_consume(cluster.bootstrap(), "rt", range(4), n)
    assert {(r.partition, r.offset): (r.key, r.value) for r in kp} == acked
    assert len(kp) == n


def test_acks_all_on_rf3_is_acknowledged_once_replicated(cluster):
    """acks=all on an RF 3 partition: acknowledged once the followers have it (follower
    replication), and then readable from the leader."""
    create_topics(cluster.bootstrap(), [("all", 1, 3)])
    wait_until(
        "all in sync",
        lambda: replicas_in_sync(admin(cluster.bootstrap()).list_topics(timeout=10), "all", 1, 3),
        10,
    )
    vals = [f"a{i}".encode() for i in range(50)]
    p = producer(cluster.bootstrap(), acks="all", enable_idempotence=False)
    d = produce_all(p, "all", vals, partition=0)
    assert sorted(r.offset for r in d.ok) == list(range(50))
    got = consume(cluster.bootstrap(), "all", [0])
    assert [r.value for r in got] == vals


def partition_from(broker, topic, partition):
    """`sluice topic describe --output json` of one partition, asked of one broker."""
    t = sluice_json(broker, "topic", "describe", topic)[0]
    return next(p for p in t["partitions"] if p["partition"] == partition)


def test_leader_failover_after_sigkill_and_rejoin(cluster):
    """SIGKILL of partition 0's leader: metadata from another broker soon shows a new leader
    from the old ISR, the dead broker offline and out of the ISR; acks=1 produce to the
    partition keeps working; restarted on its data dir and ports, the broker registers
    again and, caught up, rejoins the ISR."""
    create_topics(cluster.bootstrap(), [("fo", 2, 3)])
    a = admin(cluster.bootstrap())
    ps = wait_until(
        "fo in sync", lambda: replicas_in_sync(a.list_topics(timeout=10), "fo", 2, 3), 10
    )
    before = [f"before-{i}".encode() for i in range(20)]
    produce_all(producer(cluster.bootstrap(), acks=1), "fo", before, partition=0)
    old_leader, old_isr = ps[0].leader, sorted(ps[0].isrs)
    victim = cluster.brokers[old_leader]
    other = next(i for i in VOTERS if i != old_leader)

    victim.kill()
    killed_at = time.monotonic()

    def failed_over(via):
        p = partition_from(cluster.brokers[via], "fo", 0)
        moved = (
            p["leader"] not in (old_leader, -1)
            and old_leader in p["offline_replicas"]
            and old_leader not in p["isr"]
        )
        return p if moved else None

    p = wait_until(
        f"a new leader for fo-0 (seen from broker {other})",
        lambda: failed_over(other),
        FAILOVER_TIMEOUT,
    )
    assert p["leader"] in old_isr
    assert p["leader"] in p["isr"]
    assert sorted(p["replicas"]) == old_isr
    # every survivor's copy of the image follows within a heartbeat; then confluent-kafka's
    # metadata (from whichever survivor it asks) agrees
    survivors = [i for i in VOTERS if i != old_leader]
    for via in survivors:
        assert wait_until(f"fo-0 failed over on {via}", lambda: failed_over(via), 5) == p
    bootstrap = cluster.bootstrap()
    md = admin(bootstrap).list_topics(timeout=10)
    assert sorted(md.brokers) == survivors
    assert md.topics["fo"].partitions[0].leader == p["leader"]
    assert old_leader not in md.topics["fo"].partitions[0].isrs
    print(f"fo-0 moved from {old_leader} to {p['leader']} in {time.monotonic() - killed_at:.1f}s")

    # acks=1 produce to the partition keeps working, on its new leader
    after = [f"after-{i}".encode() for i in range(20)]
    d = produce_all(producer(bootstrap, acks=1), "fo", after, partition=0)
    assert all(r.partition == 0 for r in d.ok)
    got = consume(bootstrap, "fo", [0])
    assert [r.value for r in got][-20:] == after

    # the killed broker comes back on its data dir and ports and registers again
    port = victim.port
    victim.start()
    assert victim.port == port
    cluster.wait_registered(VOTERS)
    md = wait_until(
        "3 brokers in confluent-kafka's metadata",
        lambda: (lambda m: m if sorted(m.brokers) == [1, 2, 3] else None)(
            admin(cluster.bootstrap()).list_topics(timeout=10)
        ),
        JOIN_TIMEOUT,
    )
    assert md.brokers[old_leader].port == port
    # and producing still works with every broker up
    produce_all(producer(cluster.bootstrap(), acks=1), "fo", [b"back"], partition=0)
    t0 = time.monotonic()
    wait_until(
        "the restarted broker back in fo-0's ISR",
        lambda: old_leader in partition_from(cluster.brokers[other], "fo", 0)["isr"],
        FAILOVER_TIMEOUT,
    )
    print(f"rejoined the ISR in {time.monotonic() - t0:.1f}s")


def test_a_broker_outside_the_voters_joins(cluster):
    """A fourth broker that is only a member (not in controller.quorum.voters) registers,
    appears in every broker's metadata, gets replicas of new topics and serves them; the
    quorum's voters stay 1, 2, 3."""
    b4 = cluster.add(4)
    cluster.wait_registered([1, 2, 3, 4])
    md = admin(b4.bootstrap).list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3, 4]
    assert md.brokers[4].port == b4.port

    q = sluice_json(b4, "cluster", "quorum")
    assert q["current_voters"] == [1, 2, 3]
    assert q["current_observers"] == []
    assert q["leader_id"] in VOTERS

    create_topics(b4.bootstrap, [("wide", 4, 4)])
    ps = wait_until(
        "wide in sync",
        lambda: replicas_in_sync(admin(b4.bootstrap).list_topics(timeout=10), "wide", 4, 4),
        10,
    )
    assert {p.leader for p in ps} == {1, 2, 3, 4}
    vals = [f"w{i}".encode() for i in range(40)]
    d = produce_all(producer(cluster.bootstrap(), acks=1), "wide", vals, keys=vals)
    got = consume(b4.bootstrap, "wide", range(4))
    assert sorted(r.value for r in got) == sorted(vals)
    assert {(r.partition, r.offset) for r in got} == {(r.partition, r.offset) for r in d.ok}



def test_min_insync_replicas_refuses_acks_all_and_keeps_what_was_acknowledged(cluster):
    """RF 2 with min.insync.replicas=2: acks=all is acknowledged while both replicas are in
    sync; kill one and, once the controller fenced it, acks=all is refused with
    NOT_ENOUGH_REPLICAS while acks=1 still works; restarted, the broker catches up, the ISR is
    full again and every acknowledged message is there exactly once."""
    a = admin(cluster.bootstrap())
    a.create_topics([NewTopic("mir", 1, 2, config={"min.insync.replicas": "2"})])["mir"].result(
        TIMEOUT
    )
    ps = wait_until("mir in sync", lambda: replicas_in_sync(a.list_topics(timeout=10), "mir", 1, 2), 10)
    acked = [f"all-{i}".encode() for i in range(200)]
    produce_all(producer(cluster.bootstrap(), acks="all"), "mir", acked, partition=0)
    leader = ps[0].leader
    follower = next(b for b in ps[0].replicas if b != leader)
    victim = cluster.brokers[follower]
    victim.kill()
    survivors = [i for i in VOTERS if i != follower]
    wait_until(
        "the ISR shrank to the leader",
        lambda: partition_from(cluster.brokers[leader], "mir", 0)["isr"] == [leader] or None,
        FAILOVER_TIMEOUT,
    )
    bootstrap = ",".join(f"127.0.0.1:{cluster.brokers[i].port}" for i in survivors)
    p = producer(bootstrap, acks="all", enable_idempotence=False, **{"message.timeout.ms": 5000})
    errors = []
    p.produce("mir", value=b"refused", partition=0, on_delivery=lambda e, m: errors.append(e))
    p.flush(TIMEOUT)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].name() in ("NOT_ENOUGH_REPLICAS", "_MSG_TIMED_OUT"), errors[0]
    ones = [f"one-{i}".encode() for i in range(20)]
    produce_all(producer(bootstrap, acks=1), "mir", ones, partition=0)
    victim.start()
    cluster.wait_registered(VOTERS)
    wait_until(
        "the ISR is full again",
        lambda: sorted(partition_from(cluster.brokers[leader], "mir", 0)["isr"])
        == sorted(ps[0].replicas)
        or None,
        JOIN_TIMEOUT + 15,
    )
    got = [r.value for r in consume(cluster.bootstrap(), "mir", [0])]
    for v in acked + ones:
        assert got.count(v) == 1, v
    assert b"refused" not in got
