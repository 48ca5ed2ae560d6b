"""Helpers for the idempotence and transaction suites (issue 8): a fault-injecting Kafka TCP
proxy, multi-topic consumption at either isolation level, ListOffsets at either isolation
level, and small waiting utilities.

FaultProxy sits between the clients and one broker. The broker is started with
`--advertised 127.0.0.1:<proxy port>`, so Metadata sends every client through the proxy. The
proxy understands Kafka's framing (int32 length prefix; requests start with api_key, version,
correlation id; responses with the correlation id), so it can break a connection at exactly the
points that matter for an idempotent producer:

- cut_request: forward only the first half of a Produce request, then close both sides (the
  broker must discard the partial frame; the client retries a request that was never
  appended);
- drop_response: forward a Produce request whole, wait for the broker's response, and close
  both sides instead of forwarding it (the broker appended the batch, the client never heard
  of it and retries it: the broker must acknowledge the retry without appending it again);
- cut_response: forward only the first half of a Produce response, then close both sides.

Faults are drawn from a seeded random generator; hold_next_response() withholds one Produce
response (with the broker connection closed) until release(), so a test can restart the broker
between the append and the client's retry.
"""

import random
import selectors
import socket
import struct
import threading
import time
from collections import Counter

import kafka
from confluent_kafka import OFFSET_BEGINNING, Consumer, IsolationLevel, KafkaError
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from helpers import TIMEOUT, Rec

PRODUCE = 0
WAIT = 60.0


def wait_until(cond, describe, timeout=WAIT, interval=0.1):
    """Polls `cond` until it returns a truthy value (returned); fails with describe()."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting: {describe()}")
        time.sleep(interval)


def reserve_port():
    """A listening socket on 127.0.0.1 with a free port (kept open: no race with others)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


class FaultProxy:
    """See the module docstring. `port` is the proxy's port; `target_port` (the broker's) can
    be set after construction, before the first client connects."""

    def __init__(self, seed=0, target_port=None):
        self.listener = reserve_port()
        self.port = self.listener.getsockname()[1]
        self.target_port = target_port
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.stats = Counter()
        self.faults = None  # dict of probabilities while fault injection is on
        self.requests_seen = Counter()  # api_key -> requests forwarded
        self._conns = set()
        self._closed = False
        self._hold_armed = None  # api_key whose next response is withheld
        self.held = threading.Event()  # set once a response has been withheld
        self._release = threading.Event()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def advertised(self):
        return f"127.0.0.1:{self.port}"

    # -- control ----------------------------------------------------------------------------

    def set_faults(self, cut_request=0.0, drop_response=0.0, cut_response=0.0,
                   api_keys=(PRODUCE,), first_after=None, max_faults=None):
        """Turns fault injection on for requests with `api_keys`. With `first_after`, from
        that many'th such request on, responses are dropped until one has been (so every run
        has at least one append whose response was lost). `max_faults` caps the total."""
        with self.lock:
            self.faults = dict(
                cut_request=cut_request, drop_response=drop_response,
                cut_response=cut_response, api_keys=frozenset(api_keys),
                first_after=first_after, max_faults=max_faults, seen=0,
            )

    def faults_off(self):
        with self.lock:
            self.faults = None

    def faults_total(self):
        with self.lock:
            return sum(v for k, v in self.stats.items() if k in FAULT_KINDS)

    def hold_next_response(self, api_key=PRODUCE):
        """The next response to an `api_key` request is not forwarded: the broker connection is
        closed, the client connection stays open and silent until release()."""
        with self.lock:
            self.held.clear()
            self._release.clear()
            self._hold_armed = api_key

    def release(self):
        """Closes the client connection of a held response (the client then retries)."""
        self._release.set()

    def close(self):
        self._closed = True
        self._release.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            _abort(c)

    # -- data path --------------------------------------------------------------------------

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.stats["connections"] += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _decide_request(self, api_key):
        with self.lock:
            f = self.faults
            if f is None or api_key not in f["api_keys"]:
                return None
            f["seen"] += 1
            total = sum(v for k, v in self.stats.items() if k in FAULT_KINDS)
            if f["max_faults"] is not None and total >= f["max_faults"]:
                return None
            if (f["first_after"] is not None and self.stats["drop_response"] == 0
                    and f["seen"] >= f["first_after"]):
                return "drop_response"
            x = self.rng.random()
            if x < f["cut_request"]:
                return "cut_request"
            x -= f["cut_request"]
            if x < f["drop_response"]:
                return "drop_response"
            x -= f["drop_response"]
            if x < f["cut_response"]:
                return "cut_response"
            return None

    def _count(self, kind):
        with self.lock:
            self.stats[kind] += 1

    def _serve(self, client):
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            self._count("upstream_refused")
            _abort(client)
            return
        upstream.settimeout(None)
        client.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self._conns.update((client, upstream))
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, "c")
        sel.register(upstream, selectors.EVENT_READ, "u")
        cbuf, ubuf = bytearray(), bytearray()
        inflight = {}  # correlation id -> (api_key, fault decided for its response)
        try:
            while not self._closed:
                for key, _ in sel.select(0.2):
                    try:
                        data = key.fileobj.recv(1 << 16)
                    except OSError:
                        data = b""
                    if not data:
                        return
                    if key.data == "c":
                        cbuf += data
                        for frame in _frames(cbuf):
                            api_key, _ver, corr = struct.unpack(">hhi", frame[4:12])
                            self.requests_seen[api_key] += 1
                            fault = self._decide_request(api_key)
                            if fault == "cut_request":
                                upstream.sendall(frame[: 4 + (len(frame) - 4) // 2])
                                self._count("cut_request")
                                return
                            upstream.sendall(frame)
                            inflight[corr] = (api_key, fault)
                    else:
                        ubuf += data
                        for frame in _frames(ubuf):
                            (corr,) = struct.unpack(">i", frame[4:8])
                            api_key, fault = inflight.pop(corr, (None, None))
                            if fault == "drop_response":
                                self._count("drop_response")
                                return
                            if fault == "cut_response":
                                client.sendall(frame[: 4 + (len(frame) - 4) // 2])
                                self._count("cut_response")
                                return
                            with self.lock:
                                hold = self._hold_armed is not None and api_key == self._hold_armed
                                if hold:
                                    self._hold_armed = None
                            if hold:
                                self._count("held_response")
                                _abort(upstream)
                                self.held.set()
                                self._release.wait(WAIT)
                                return
                            client.sendall(frame)
        except OSError:
            pass
        finally:
            sel.close()
            _abort(client)
            _abort(upstream)
            with self.lock:
                self._conns.discard(client)
                self._conns.discard(upstream)


FAULT_KINDS = ("cut_request", "drop_response", "cut_response")


def _frames(buf):
    """Removes and yields every complete length-prefixed frame at the start of `buf`."""
    while len(buf) >= 4:
        (n,) = struct.unpack(">i", buf[:4])
        if n < 0 or len(buf) < 4 + n:
            return
        frame = bytes(buf[: 4 + n])
        del buf[: 4 + n]
        yield frame


def _abort(sock):
    """Closes with a RST (no lingering, no orderly FIN): a dropped connection."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# reading back


def ck_read(bootstrap, tps, isolation="read_committed", timeout=TIMEOUT, **conf):
    """Reads every (topic, partition) in `tps` from the beginning to its end (EOF: the LSO
    under read_committed, the high watermark under read_uncommitted) with confluent-kafka.
    Returns {(topic, partition): [Rec, ...]} in offset order (every tp present)."""
    settings = {
        "bootstrap.servers": bootstrap,
        "group.id": "txn-tests-reader",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "isolation.level": isolation,
        "fetch.wait.max.ms": 50,  # empty partitions report their end sooner
    }
    settings.update(conf)
    c = Consumer(settings)
    out = {tp: [] for tp in tps}
    try:
        c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in tps])
        pending = set(tps)
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, (
                f"{sorted(pending)} never reached their end ({isolation}); "
                f"got {sum(len(v) for v in out.values())} records"
            )
            msg = c.poll(0.5)
            if msg is None:
                continue
            tp = (msg.topic(), msg.partition())
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(tp)
                    continue
                raise AssertionError(f"consumer error ({isolation}): {msg.error()}")
            out[tp].append(
                Rec(msg.partition(), msg.offset(), msg.key(), msg.value(),
                    tuple(msg.headers() or ()), msg.timestamp()[1])
            )
        return out
    finally:
        c.close()


def kp_read(bootstrap, tps, isolation="read_committed", timeout_ms=5000):
    """The same with kafka-python's KafkaConsumer: reads until each tp's position reaches the
    end offset that ListOffsets gives at this isolation level (LSO or high watermark)."""
    c = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation,
    )
    try:
        parts = [kafka.TopicPartition(t, p) for t, p in tps]
        c.assign(parts)
        c.seek_to_beginning()
        ends = c.end_offsets(parts)
        out = {tp: [] for tp in tps}
        deadline = time.monotonic() + timeout_ms / 1000 + TIMEOUT
        while any(c.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() < deadline, (
                f"kafka-python ({isolation}) stuck: positions "
                f"{ {str(tp): c.position(tp) for tp in parts} } ends { {str(k): v for k, v in ends.items()} }"
            )
            for tp, rs in c.poll(timeout_ms=500).items():
                for r in rs:
                    out[(tp.topic, tp.partition)].append(
                        Rec(r.partition, r.offset, r.key, r.value,
                            tuple(r.headers or ()), r.timestamp)
                    )
        return out
    finally:
        c.close()


def list_offsets(bootstrap, tps, isolation, spec="latest"):
    """{(topic, partition): offset} from AdminClient.list_offsets at an explicit isolation
    level: under read_committed `latest` is the last stable offset."""
    a = AdminClient({"bootstrap.servers": bootstrap})
    level = {
        "read_committed": IsolationLevel.READ_COMMITTED,
        "read_uncommitted": IsolationLevel.READ_UNCOMMITTED,
    }[isolation]
    s = OffsetSpec.latest() if spec == "latest" else OffsetSpec.earliest()
    futs = a.list_offsets(
        {TopicPartition(t, p): s for t, p in tps}, isolation_level=level,
        request_timeout=TIMEOUT,
    )
    return {(tp.topic, tp.partition): f.result(TIMEOUT).offset for tp, f in futs.items()}


def kp_end_offsets(bootstrap, tps, isolation):
    """{(topic, partition): end offset} from kafka-python's KafkaConsumer.end_offsets, which
    sends ListOffsets with the consumer's isolation_level."""
    c = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, isolation_level=isolation)
    try:
        parts = [kafka.TopicPartition(t, p) for t, p in tps]
        return {(tp.topic, tp.partition): o for tp, o in c.end_offsets(parts).items()}
    finally:
        c.close()


class LiveReader:
    """A confluent-kafka consumer polling `tps` from the beginning in its own thread while a
    test produces: it sees the LSO move and the aborted-transaction lists arrive with
    incremental fetches, as an application consumer would."""

    def __init__(self, bootstrap, tps, isolation="read_committed"):
        self.bootstrap, self.tps, self.isolation = bootstrap, list(tps), isolation
        self.lock = threading.Lock()
        self.recs = {tp: [] for tp in self.tps}
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        c = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": "txn-tests-live",
            "enable.auto.commit": False,
            "isolation.level": self.isolation,
            "fetch.wait.max.ms": 50,
        })
        try:
            c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in self.tps])
            while not self._stop.is_set():
                msg = c.poll(0.1)
                if msg is None:
                    continue
                with self.lock:
                    if msg.error():
                        self.errors.append(str(msg.error()))
                        continue
                    self.recs[(msg.topic(), msg.partition())].append(
                        Rec(msg.partition(), msg.offset(), msg.key(), msg.value()))
        finally:
            c.close()

    def count(self):
        with self.lock:
            return sum(len(v) for v in self.recs.values())

    def snapshot(self):
        with self.lock:
            return {tp: list(v) for tp, v in self.recs.items()}

    def stop(self):
        self._stop.set()
        self._thread.join(TIMEOUT)
