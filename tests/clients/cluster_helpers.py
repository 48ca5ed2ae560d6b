"""Shared helpers for the multi-broker real-client tests (test_cluster_lab.py,
test_cluster_faults.py, ...): a cluster whose brokers take extra server properties and an
advertised address, a managed-cluster generator for fixtures, per-partition metadata views, and
a reader of the partition segment files in a broker's data dir.

Only add functions here: several test files import from this module.
"""

import gc
import struct
import subprocess
import time
from pathlib import Path

from confluent_kafka import Producer

from conftest import Broker, server_binary
from helpers import admin
from test_cluster import _LIVE, JOIN_TIMEOUT, VOTERS, Cluster, sluice_json, wait_until

class ConfigurableCluster(Cluster):
    """test_cluster.Cluster whose brokers get extra `key=value` server properties (for all of
    them, and per broker) and, optionally, an advertised host:port (what Metadata gives clients
    and what the broker registers, so followers fetch from it there too)."""

    def __init__(self, tmp_path, made, overrides=()):
        super().__init__(tmp_path, made)
        self.overrides = list(overrides)

    def add(self, node_id, start=True, overrides=(), advertised=None):
        logs = self.tmp / f"logs-{node_id}"
        logs.mkdir()
        b = Broker(
            server_binary(),
            self.tmp / f"data-{node_id}",
            logs,
            cores=1,
            overrides=[
                f"node.id={node_id}",
                f"controller.quorum.voters={self.voters}",
                *self.overrides,
                *overrides,
            ],
            advertised=advertised,
        )
        self.brokers[node_id] = b
        self.made.append(b)
        _LIVE.append(b)
        if start:
            b.start()
        return b


def managed_cluster(
    request, tmp_path, node_ids=VOTERS, overrides=(), advertised=None, setup=None
):
    """Generator for a fixture (`yield from managed_cluster(...)`): a ConfigurableCluster of
    brokers `node_ids` (those in VOTERS are the quorum's voters, others members only), all
    registered. `advertised` maps a node id to its advertised "host:port"; `setup(cluster)` is
    called before the first broker starts. At the end every broker still running must exit 0
    on SIGTERM, and none is left behind."""
    made = []
    request.node.factory_brokers = made  # conftest's report hook shows their logs on failure
    c = ConfigurableCluster(tmp_path, made, overrides)
    if setup is not None:
        setup(c)
    advertised = advertised or {}
    try:
        for i in node_ids:
            c.add(i, advertised=advertised.get(i))
        c.wait_registered(node_ids)
    except BaseException:
        c.stop_all()
        raise
    yield c
    died = [
        i for i, b in c.brokers.items() if b.proc is not None and not b.running and not b.ended
    ]
    codes = c.stop_all()
    bad = {i: code for i, code in codes.items() if code != 0}
    assert not bad, "brokers did not exit cleanly on SIGTERM: " + ", ".join(
        f"{i} (exit {code})\n{c.brokers[i].log_tail(30)}" for i, code in bad.items()
    )
    if died and not getattr(request.node, "failed_call", False):
        raise AssertionError(f"brokers {died} died during the test")


def partition_states(bootstrap, topic):
    """{partition: (leader, replicas, sorted isr)} of `topic` in confluent-kafka's Metadata
    (leader -1 when offline); None while the topic is unknown."""
    a = admin(bootstrap)
    md = a.list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None and not t.partitions:
        return None
    return {
        p.id: (p.leader, list(p.replicas), sorted(p.isrs)) for p in t.partitions.values()
    }


def partition_view(broker, topic):
    """{partition: `sluice topic describe --output json` entry} as one broker sees it."""
    t = sluice_json(broker, "topic", "describe", topic)[0]
    return {p["partition"]: p for p in t["partitions"]}


def probe_acks_all(bootstrap, topic, partition, value, timeout=10.0):
    """Sends one message with acks=all and no retries (not idempotent, so that the broker's
    error reaches the delivery report as it is); returns the KafkaError or None."""
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            "retries": 0,
            "linger.ms": 0,
            "message.timeout.ms": int(timeout * 1000),
        }
    )
    out = []
    p.produce(topic, value=value, partition=partition, on_delivery=lambda e, m: out.append(e))
    left = p.flush(timeout + 10)
    assert left == 0 and len(out) == 1, f"no delivery report for the probe of {topic}-{partition}"
    return out[0]


BATCH_HEADER = struct.Struct(">qi")  # baseOffset, batchLength
LAST_OFFSET_DELTA = struct.Struct(">i")  # at byte 23 of the batch


def segment_batches(partition_dir):
    """[(base offset, last offset, raw batch bytes)] of every record batch in the `.log`
    segments of one partition directory (`<data>/<topic>-<partition>/`), in offset order. A
    segment stops at the first incomplete or zero-length batch (an unwritten tail)."""
    out = []
    for seg in sorted(Path(partition_dir).glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base, length = BATCH_HEADER.unpack_from(data, pos)
            end = pos + 12 + length
            if length < 49 or end > len(data):
                break
            (delta,) = LAST_OFFSET_DELTA.unpack_from(data, pos + 23)
            out.append((base, base + delta, data[pos:end]))
            pos = end
    return out


def sigterm_and_check(broker):
    """Clean stop of one broker (controlled shutdown); asserts exit 0."""
    gc.collect()
    code = broker.stop()
    assert code == 0, f"broker did not stop cleanly (exit {code})\n{broker.log_tail(30)}"


def wait_all_registered(cluster, ids, timeout=JOIN_TIMEOUT):
    """Like Cluster.wait_registered but with a caller-chosen timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster.wait_registered(ids)
            return
        except (AssertionError, subprocess.SubprocessError):
            if time.monotonic() > deadline:
                raise
