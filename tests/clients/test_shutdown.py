"""SIGTERM is a prompt, clean stop even while consumers are parked in long-poll fetches."""

import threading
import time

from confluent_kafka import TopicPartition

from helpers import consumer, create_topic

PROMPT = 2.5  # seconds; the long polls below would last 3 s


def parked_consumer(broker):
    """A consumer whose fetch is waiting (fetch.wait.max.ms=3000) on empty partitions owned by
    both shards, whichever shard its connection landed on."""
    create_topic(broker.bootstrap, "idle", partitions=2)
    c = consumer(broker.bootstrap, fetch_wait_max_ms=3000, enable_partition_eof=False)
    c.assign([TopicPartition("idle", p, 0) for p in (0, 1)])
    assert c.poll(1.0) is None
    return c


def timed_stop(broker):
    started = time.monotonic()
    code = broker.stop()
    return code, time.monotonic() - started


def test_sigterm_with_a_connected_consumer_in_long_poll(broker):
    c = parked_consumer(broker)
    stop = threading.Event()

    def keep_polling():
        while not stop.is_set():
            c.poll(0.1)

    poller = threading.Thread(target=keep_polling)
    poller.start()
    try:
        code, took = timed_stop(broker)
    finally:
        stop.set()
        poller.join()
        c.close()
    assert code == 0
    assert took < PROMPT, f"stop took {took:.2f}s with a consumer parked in a fetch"


def test_sigterm_right_after_a_consumer_left_mid_fetch(broker):
    c = parked_consumer(broker)
    c.close()  # its last fetch is still parked on the broker
    code, took = timed_stop(broker)
    assert code == 0
    assert took < PROMPT, f"stop took {took:.2f}s after a consumer left with a fetch in flight"
