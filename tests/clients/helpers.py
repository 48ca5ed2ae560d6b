"""Client helpers shared by the compatibility tests: topic creation, producing with delivery
reports, and consuming whole partitions with confluent-kafka (librdkafka) and kafka-python."""

import time
from dataclasses import dataclass, field

import kafka
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT = 30.0


@dataclass(frozen=True)
class Rec:
    """One consumed record, the same shape whichever client read it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple = ()
    timestamp: int | None = None


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap, name, partitions=1, config=None):
    """Creates a topic with confluent-kafka's AdminClient and waits for the result."""
    a = admin(bootstrap)  # must outlive the future: destroying it fails pending requests
    futures = a.create_topics(
        [NewTopic(name, partitions, 1, config=config or {})], operation_timeout=TIMEOUT
    )
    futures[name].result(TIMEOUT)


def kafka_error(exc):
    """The KafkaError inside a confluent-kafka exception from a future."""
    err = exc.args[0]
    assert isinstance(err, KafkaError), f"unexpected exception {exc!r}"
    return err


def producer(bootstrap, **conf):
    """A confluent-kafka producer; `conf` uses librdkafka names with '_' for '.'."""
    settings = {"bootstrap.servers": bootstrap, "linger.ms": 5}
    settings.update({k.replace("_", "."): v for k, v in conf.items()})
    return Producer(settings)


@dataclass
class Deliveries:
    """Collects confluent-kafka delivery reports."""

    ok: list = field(default_factory=list)  # Rec for each acknowledged message
    failed: list = field(default_factory=list)  # (KafkaError, value)

    def callback(self, err, msg):
        if err is None:
            headers = tuple(msg.headers() or ())
            self.ok.append(Rec(msg.partition(), msg.offset(), msg.key(), msg.value(), headers))
        else:
            self.failed.append((err, msg.value()))


def produce_all(prod, topic, values, keys=None, partition=None, **kwargs):
    """Produces every value (with its key), flushes, and returns the Deliveries; asserts that
    every message got a successful delivery report."""
    d = Deliveries()
    keys = keys if keys is not None else [None] * len(values)
    for k, v in zip(keys, values):
        extra = dict(kwargs)
        if partition is not None:
            extra["partition"] = partition
        while True:
            try:
                prod.produce(topic, value=v, key=k, on_delivery=d.callback, **extra)
                break
            except BufferError:
                prod.poll(0.1)
        prod.poll(0)
    left = prod.flush(TIMEOUT)
    assert left == 0, f"{left} messages still undelivered after {TIMEOUT}s"
    assert not d.failed, f"delivery failures: {d.failed[:5]}"
    assert len(d.ok) == len(values)
    return d


def consumer(bootstrap, **conf):
    """A confluent-kafka consumer for assign() (no group subscription)."""
    settings = {
        "bootstrap.servers": bootstrap,
        "group.id": "sluice-tests",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
    }
    settings.update({k.replace("_", "."): v for k, v in conf.items()})
    return Consumer(settings)


def consume(bootstrap, topic, partitions, start=OFFSET_BEGINNING, timeout=TIMEOUT, **conf):
    """Reads `partitions` of `topic` from `start` up to their end with confluent-kafka.
    `start` is one offset for all partitions or a {partition: offset} dict."""
    starts = start if isinstance(start, dict) else {p: start for p in partitions}
    c = consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, p, starts[p]) for p in partitions])
        return drain(c, set(partitions), timeout)
    finally:
        c.close()


def drain(c, partitions, timeout=TIMEOUT):
    """Polls an assigned consumer until every partition has reported end-of-partition."""
    out = []
    pending = set(partitions)
    deadline = time.monotonic() + timeout
    while pending:
        assert time.monotonic() < deadline, (
            f"partitions {sorted(pending)} never reached their end; got {len(out)} records"
        )
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
                continue
            raise AssertionError(f"consumer error: {msg.error()}")
        out.append(to_rec(msg))
    return out


def to_rec(msg):
    return Rec(
        msg.partition(),
        msg.offset(),
        msg.key(),
        msg.value(),
        tuple(msg.headers() or ()),
        msg.timestamp()[1],
    )


def kp_consume(bootstrap, topic, partitions, expected, timeout_ms=10000):
    """Reads `partitions` from the beginning with kafka-python (assign, seek_to_beginning,
    consumer_timeout_ms) until `expected` records arrived or the consumer times out."""
    c = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=timeout_ms,
    )
    try:
        c.assign([kafka.TopicPartition(topic, p) for p in partitions])
        c.seek_to_beginning()
        out = []
        for r in c:
            out.append(
                Rec(r.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)
            )
            if len(out) >= expected:
                break
        return out
    finally:
        c.close()


def kp_producer(bootstrap, **conf):
    """A kafka-python producer. kafka-python 3 is idempotent by default (KIP-679), which needs
    InitProducerId; tests of other features turn that off, test_kafka_python_default_producer
    covers it."""
    conf.setdefault("enable_idempotence", False)
    return kafka.KafkaProducer(bootstrap_servers=bootstrap, **conf)


def by_partition(recs):
    """{partition: [Rec, ...]} in consumption order."""
    out = {}
    for r in recs:
        out.setdefault(r.partition, []).append(r)
    return out


def values(recs):
    return [r.value for r in recs]
