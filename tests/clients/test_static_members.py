"""Static membership (KIP-345) with confluent-kafka: members with a group.instance.id that are
closed (librdkafka's static members send no LeaveGroup) and restarted within the session timeout
get their partitions back without a rebalance: the other member sees no revoke, the restarted
one is assigned exactly what its instance had, under a new member id. Done for a follower and
then for the group leader (whose JoinGroup answer says skip_assignment). Nothing needed fixing
in the coordinator; this pins the behaviour."""

import threading
import time

from confluent_kafka import Consumer
from kafka.admin import KafkaAdminClient

from helpers import TIMEOUT, create_topic

SESSION_MS = 10000  # long enough for a restart, above group.min.session.timeout.ms (6 s)
PARTITIONS = 4
WAIT = 30.0


class StaticMember:
    """A confluent-kafka consumer with a group.instance.id, polling in its own thread and
    recording its rebalance callbacks."""

    def __init__(self, bootstrap, group, topic, instance):
        self.instance = instance
        self.events = []  # ("assign" | "revoke" | "lost", frozenset of partitions)
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.error = None
        self.c = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.instance.id": instance,
            "client.id": instance,
            "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": 500,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        self.c.subscribe(
            [topic],
            on_assign=lambda c, ps: self._event("assign", ps),
            on_revoke=lambda c, ps: self._event("revoke", ps),
            on_lost=lambda c, ps: self._event("lost", ps),
        )
        self._thread = threading.Thread(target=self._run, name=instance, daemon=True)
        self._thread.start()

    def _event(self, kind, ps):
        with self.lock:
            self.events.append((kind, frozenset(p.partition for p in ps)))

    def _run(self):
        try:
            while not self._stop.is_set():
                m = self.c.poll(0.2)
                if m is not None and m.error():
                    self.error = m.error()
        finally:
            self.c.close()  # static: no LeaveGroup

    def assigned(self):
        with self.lock:
            current = frozenset()
            for kind, ps in self.events:
                current = ps if kind == "assign" else frozenset()
            return current

    def close(self):
        self._stop.set()
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive()


def wait(cond, what):
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def describe(kp, group):
    (d,) = kp.describe_groups([group]).values()
    return d


def test_static_members_restart_without_rebalance(broker):
    bs, group, topic = broker.bootstrap, "statics", "static-topic"
    create_topic(bs, topic, PARTITIONS)
    kp = KafkaAdminClient(bootstrap_servers=bs)
    a = StaticMember(bs, group, topic, "instance-a")
    wait(lambda: len(a.assigned()) == PARTITIONS, "a alone gets every partition")
    b = StaticMember(bs, group, topic, "instance-b")
    members = [a, b]
    try:
        wait(
            lambda: len(a.assigned()) == 2 and len(b.assigned()) == 2
            and a.assigned() | b.assigned() == frozenset(range(PARTITIONS)),
            "two static members split the partitions",
        )
        wait(lambda: describe(kp, group)["group_state"] == "Stable", "a stable group")
        before = describe(kp, group)
        instances = sorted(m["group_instance_id"] for m in before["members"])
        assert instances == ["instance-a", "instance-b"], before
        split = {m.instance: m.assigned() for m in members}

        # restart each in turn: first b (a follower), then a (the leader: it joined first)
        for name in ("instance-b", "instance-a"):
            old = next(m for m in members if m.instance == name)
            other = next(m for m in members if m.instance != name)
            other_events = list(other.events)
            old_ids = {m["member_id"] for m in describe(kp, group)["members"]}
            old.close()
            new = StaticMember(bs, group, topic, name)
            members[members.index(old)] = new
            wait(lambda: new.assigned() == split[name], f"{name} gets its partitions back")
            d = describe(kp, group)
            assert d["group_state"] == "Stable", d
            ids = {m["member_id"]: m["group_instance_id"] for m in d["members"]}
            assert sorted(ids.values()) == ["instance-a", "instance-b"], d
            assert len(set(ids) - old_ids) == 1, "the restarted instance has a new member id"
            # no rebalance: the other member saw nothing, the restarted one one assignment
            time.sleep(2)  # time for a rebalance to show if one had started
            assert other.events == other_events, (name, other.events)
            assert new.events == [("assign", split[name])], new.events
            assert other.assigned() == split[other.instance]
        assert [m.error for m in members] == [None, None]
    finally:
        for m in members:
            m.close()
        kp.close()
