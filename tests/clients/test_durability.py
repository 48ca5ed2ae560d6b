"""Data and topics survive a clean restart, and every acknowledged message survives SIGKILL of
the broker in the middle of a produce run."""

import itertools
import threading
import time

import pytest

from helpers import (
    TIMEOUT,
    Deliveries,
    admin,
    by_partition,
    consume,
    create_topic,
    produce_all,
    producer,
    values,
)


def test_restart_between_produce_and_consume(broker):
    create_topic(broker.bootstrap, "kept", partitions=3, config={"retention.ms": "-1"})
    create_topic(broker.bootstrap, "empty", partitions=2)
    sent = [f"kept-{i}".encode() for i in range(3000)]
    keys = [str(i).encode() for i in range(len(sent))]  # spread over every partition
    d = produce_all(producer(broker.bootstrap, acks="all"), "kept", sent, keys)
    before = consume(broker.bootstrap, "kept", [0, 1, 2])
    assert sorted(by_partition(before)) == [0, 1, 2]

    broker.restart()

    topics = admin(broker.bootstrap).list_topics(timeout=TIMEOUT).topics
    assert {t: len(m.partitions) for t, m in topics.items()} == {"kept": 3, "empty": 2}
    after = consume(broker.bootstrap, "kept", [0, 1, 2])
    assert by_partition(after) == by_partition(before)  # offsets, keys, values, timestamps
    assert {(r.partition, r.offset, r.value) for r in after} == {
        (r.partition, r.offset, r.value) for r in d.ok
    }
    assert consume(broker.bootstrap, "empty", [0, 1]) == []

    # appends continue after the recovered end
    more = produce_all(producer(broker.bootstrap), "kept", [b"more"], partition=1)
    assert more.ok[0].offset == len(by_partition(after)[1])
    assert values(consume(broker.bootstrap, "kept", [1]))[-1] == b"more"


CYCLES = 3


class CrashingProducer:
    """Produces numbered messages as fast as the client accepts them while the broker gets
    SIGKILLed; keeps every successful delivery report."""

    def __init__(self, bootstrap, acks):
        self.prod = producer(
            bootstrap,
            acks=acks,
            linger_ms=2,
            message_timeout_ms=3000,  # give up on messages soon after the broker dies
            request_timeout_ms=2000,
            reconnect_backoff_ms=50,
            reconnect_backoff_max_ms=200,
        )
        self.deliveries = Deliveries()
        self.seq = itertools.count()
        self.count = 0

    def produced(self):
        return self.count

    def run_until(self, stop):
        while not stop.is_set():
            value = f"msg-{next(self.seq):08d}".encode()
            try:
                self.prod.produce("crash", value=value, on_delivery=self.deliveries.callback)
            except BufferError:
                self.prod.poll(0.05)
                continue
            self.count += 1
            self.prod.poll(0)

    def settle(self):
        """Waits for a delivery report of every message produced so far."""
        left = self.prod.flush(TIMEOUT)
        assert left == 0, f"{left} messages without a delivery report after {TIMEOUT}s"


@pytest.mark.parametrize("acks", ["1", "all"])
def test_sigkill_during_produce_keeps_acknowledged_messages(broker, acks):
    create_topic(broker.bootstrap, "crash", partitions=3)
    acked = {}  # (partition, offset) -> value, over all cycles
    for cycle in range(CYCLES):
        p = CrashingProducer(broker.bootstrap, acks)
        stop = threading.Event()
        worker = threading.Thread(target=p.run_until, args=(stop,))
        worker.start()
        try:
            deadline = time.monotonic() + TIMEOUT
            while len(p.deliveries.ok) < 2000:  # the kill lands mid-stream, not before it
                assert time.monotonic() < deadline, f"cycle {cycle}: too few acknowledgements"
                time.sleep(0.01)
            time.sleep(0.1 * cycle)
            at_kill = (len(p.deliveries.ok), len(p.prod))
            broker.kill()
            produced = p.produced()
            while p.produced() < produced + 1000:  # keep producing into the dead broker
                assert time.monotonic() < deadline, f"cycle {cycle}: producer stalled"
                time.sleep(0.01)
        finally:
            stop.set()
            worker.join()
        p.settle()
        assert p.deliveries.failed, (
            f"cycle {cycle}: the kill did not interrupt the run: {at_kill[0]} acknowledged and "
            f"{at_kill[1]} queued at the kill, {len(p.deliveries.ok)} acknowledged in the end"
        )
        for r in p.deliveries.ok:
            previous = acked.setdefault((r.partition, r.offset), r.value)
            assert previous == r.value, (
                f"cycle {cycle}: offset {r.partition}/{r.offset} acknowledged twice, "
                f"for {previous!r} and {r.value!r}"
            )
        del p
        broker.start()  # recovery after an unclean stop, same data dir and port

    broker.restart()
    got = {(r.partition, r.offset): r.value for r in consume(broker.bootstrap, "crash", [0, 1, 2])}
    lost = sorted(k for k in acked if k not in got)
    changed = sorted(k for k in acked if k in got and got[k] != acked[k])
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged messages lost, first {lost[:5]}"
    assert not changed, f"{len(changed)} acknowledged offsets hold other data, first {changed[:5]}"
