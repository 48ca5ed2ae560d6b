"""Malformed, oversize and unknown requests on raw sockets: the broker closes that connection
(or answers with an error), never crashes, and a real client next to it keeps working."""

import socket
import struct

import pytest

from helpers import consume, create_topic, produce_all, producer, values


def frame(body):
    return struct.pack(">i", len(body)) + body


def header(api_key, version, correlation_id=7, client_id=b"raw"):
    """Request header v1 (api key, version, correlation id, client id)."""
    return struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id


METADATA, API_VERSIONS, PRODUCE = 3, 18, 0

BAD_REQUESTS = {
    "garbage": b"\x00\x00\x00\x10" + bytes.fromhex("deadbeef") * 4,
    "length 2^31-1": struct.pack(">i", 2**31 - 1) + b"\x00" * 64,
    "negative length": struct.pack(">i", -1) + b"\x00" * 8,
    "short frame": frame(b"\x00\x03"),
    "unknown api key": frame(header(32000, 0)),
    "unsupported api version": frame(header(METADATA, 999)),
    # array counts far beyond the frame: nothing may be allocated from them
    "metadata topics count 2^31-1": frame(header(METADATA, 1) + struct.pack(">i", 2**31 - 1)),
    "metadata v4 topics count 2^31-2": frame(
        header(METADATA, 4) + struct.pack(">i", 2**31 - 2) + b"\x01"
    ),
    "produce topics count 2^31-1": frame(
        header(PRODUCE, 3) + struct.pack(">hhii", -1, 1, 30000, 2**31 - 1)
    ),
    "truncated produce": frame(header(PRODUCE, 3) + struct.pack(">hhi", -1, 1, 30000)),
    # advertised from v0 for old librdkafka's compression check (KAFKA-18659), never served
    "produce v2 (message format v1)": frame(header(PRODUCE, 2) + struct.pack(">hii", 1, 30000, 0)),
}


def closes_connection(bootstrap, payload, timeout=10.0):
    """Sends `payload`; True when the broker closes the connection without answering."""
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(payload)
        try:
            return s.recv(4096) == b""
        except ConnectionResetError:
            return True


@pytest.fixture
def working_client(broker):
    """A producer and a topic that must keep working around every bad connection."""
    create_topic(broker.bootstrap, "healthy", partitions=2)
    prod = producer(broker.bootstrap, acks="all", message_timeout_ms=10000)
    yield prod
    prod.purge()  # nothing left to wait for if the broker died
    prod.close()


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_closes_only_its_connection(broker, working_client, name):
    produce_all(working_client, "healthy", [b"before"])
    assert closes_connection(broker.bootstrap, BAD_REQUESTS[name]), f"{name}: connection kept"
    assert broker.survives(), f"{name}: the broker died"
    produce_all(working_client, "healthy", [b"after"])
    assert sorted(values(consume(broker.bootstrap, "healthy", [0, 1]))) == [b"after", b"before"]


def test_bad_requests_while_a_client_streams(broker, working_client):
    """Every bad request in turn while one producer keeps producing on its own connection."""
    sent = []
    for i, payload in enumerate(BAD_REQUESTS.values()):
        batch = [f"m{i}-{j}".encode() for j in range(50)]
        for v in batch:
            working_client.produce("healthy", value=v)
        closes_connection(broker.bootstrap, payload)
        assert broker.survives(0.1), f"the broker died after {payload[:40]!r}"
        assert working_client.flush(30) == 0
        sent += batch
    assert sorted(values(consume(broker.bootstrap, "healthy", [0, 1]))) == sorted(sent)


def test_api_versions_with_unknown_version_gets_an_answer(broker):
    """KIP-511: an ApiVersions version the broker does not know is answered (v0 body,
    UNSUPPORTED_VERSION and the supported ranges) so the client can retry with a lower one."""
    host, port = broker.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(frame(header(API_VERSIONS, 999, correlation_id=42)))
        (size,) = struct.unpack(">i", recv_exact(s, 4))
        body = recv_exact(s, size)
    correlation_id, error_code, count = struct.unpack(">ihi", body[:10])
    assert (correlation_id, error_code) == (42, 35)  # UNSUPPORTED_VERSION
    ranges = {
        key: (lo, hi)
        for key, lo, hi in struct.iter_unpack(">hhh", body[10 : 10 + 6 * count])
    }
    assert ranges[API_VERSIONS][0] == 0 and ranges[API_VERSIONS][1] >= 3
    assert METADATA in ranges and PRODUCE in ranges


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, f"connection closed after {len(buf)} of {n} bytes"
        buf += chunk
    return buf
