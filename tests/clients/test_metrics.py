"""The HTTP listener: /metrics scraped and parsed with the Prometheus client library's own
parsers after producing and consuming known amounts, /v1/health, /v1/status, and the
listener's limits (off, bad address, busy port, stalled clients)."""

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from confluent_kafka import TopicPartition
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from conftest import server_binary
from test_cluster import cluster  # noqa: F401 (fixture)
from helpers import consume, create_topic, consumer, produce_all, producer


def get(url, accept=None, timeout=10):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def scrape(broker):
    """{(name, labels as a sorted tuple): value} of every sample, parsed by prometheus_client."""
    _, ctype, text = get(broker.http + "/metrics")
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    out = {}
    families = {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out, families


def value(samples, name, **labels):
    key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
    assert key in samples, f"{name}{labels} not scraped; have e.g. {list(samples)[:5]}"
    return samples[key]


def snapshot(broker):
    return json.loads(get(broker.http + "/v1/snapshot")[2])["snapshot"]


def test_counts_offsets_and_lag_match_what_was_produced_and_consumed(broker):
    create_topic(broker.bootstrap, "m1", partitions=2)
    prod = producer(broker.bootstrap)
    produce_all(prod, "m1", [b"a%04d" % i for i in range(300)], partition=0)
    produce_all(prod, "m1", [b"b%04d" % i for i in range(120)], partition=1)
    # a group commits 250 of partition 0 and 20 of partition 1
    c = consumer(broker.bootstrap, group_id="lagging")
    c.commit(
        offsets=[TopicPartition("m1", 0, 250), TopicPartition("m1", 1, 20)], asynchronous=False
    )
    c.close()
    # partition 0 read once, from the start to the end, by an assigned consumer
    got = consume(broker.bootstrap, "m1", [0])
    assert len(got) == 300

    s, families = scrape(broker)
    for p, n in [(0, 300), (1, 120)]:
        assert value(s, "sluice_partition_messages_in_total", topic="m1", partition=p) == n
        assert value(s, "sluice_partition_log_end_offset", topic="m1", partition=p) == n
        assert value(s, "sluice_partition_high_watermark", topic="m1", partition=p) == n
        assert value(s, "sluice_partition_log_start_offset", topic="m1", partition=p) == 0
        assert value(s, "sluice_partition_segments", topic="m1", partition=p) == 1
        # one append per produced batch: the bytes in are the partition's size on disk
        size = value(s, "sluice_partition_size_bytes", topic="m1", partition=p)
        assert size > n * 5
        assert value(s, "sluice_partition_in_bytes_total", topic="m1", partition=p) == size
    # the consumer read partition 0 once: every stored byte went out, none of partition 1
    size0 = value(s, "sluice_partition_size_bytes", topic="m1", partition=0)
    assert value(s, "sluice_partition_out_bytes_total", topic="m1", partition=0) == size0
    assert value(s, "sluice_partition_out_bytes_total", topic="m1", partition=1) == 0
    # the group's offsets and lag, as `sluice group describe` reports them
    for p, committed, lag in [(0, 250, 50), (1, 20, 100)]:
        labels = dict(group="lagging", topic="m1", partition=p)
        assert value(s, "sluice_group_committed_offset", **labels) == committed
        assert value(s, "sluice_group_lag", **labels) == lag
    assert value(s, "sluice_group_members", group="lagging") == 0
    assert value(s, "sluice_group_state", group="lagging", state="Empty") == 1
    cli = subprocess.run(
        [broker_cli(), "-b", broker.bootstrap, "--output", "json", "group", "describe",
         "lagging"],
        capture_output=True, text=True, timeout=30,
    )
    assert cli.returncode == 0, cli.stderr
    [described] = json.loads(cli.stdout)
    rows = described["rows"]
    cli_lag = {r["partition"]: r["lag"] for r in rows if r.get("partition") is not None}
    assert cli_lag == {0: 50, 1: 100}
    # storage: everything produced was written and fdatasync'd (acks=all by default)
    assert value(s, "sluice_storage_written_bytes_total") >= size0
    syncs = value(s, "sluice_storage_fdatasyncs_total")
    assert syncs >= 1
    assert value(s, "sluice_storage_fdatasync_duration_seconds_count") == syncs
    assert value(s, "sluice_storage_unsynced_bytes") == 0
    assert value(s, "sluice_partitions_poisoned") == 0
    assert value(s, "sluice_disk_free_bytes") > 0
    # requests and connections
    assert value(s, "sluice_requests_total", api="Produce") >= 2
    assert value(s, "sluice_requests_total", api="Fetch") >= 1
    assert value(s, "sluice_requests_total", api="OffsetCommit") == 1
    assert value(s, "sluice_connections_accepted_total") >= 3
    assert value(s, "sluice_network_received_bytes_total") > size0
    assert value(s, "sluice_network_sent_bytes_total") > size0
    # the hot tail served the consumer (the data was fresh)
    assert value(s, "sluice_hot_cache_hits_total") >= 1
    # histograms are well formed: cumulative buckets ending in +Inf == count
    for name in ["sluice_request_duration_seconds", "sluice_storage_fdatasync_duration_seconds"]:
        fam = families[name]
        assert fam.type == "histogram"
        by_series = {}
        for smp in fam.samples:
            series = tuple(sorted((k, v) for k, v in smp.labels.items() if k != "le"))
            by_series.setdefault(series, []).append(smp)
        for series, smps in by_series.items():
            buckets = [x for x in smps if x.name.endswith("_bucket")]
            count = next(x.value for x in smps if x.name.endswith("_count"))
            total = next(x.value for x in smps if x.name.endswith("_sum"))
            values = [b.value for b in buckets]
            assert values == sorted(values), f"{name}{series} buckets not cumulative"
            assert buckets[-1].labels["le"] == "+Inf" and values[-1] == count
            assert total >= 0 and (count == 0 or total > 0)


def broker_cli():
    import os
    from conftest import REPO

    return os.environ.get("SLUICE_CLI_BIN", str(REPO / "target" / "debug" / "sluice"))


def test_errors_are_counted_by_api_and_code(broker):
    create_topic(broker.bootstrap, "m2", partitions=1)
    # deleting a topic that does not exist: DeleteTopics answers UNKNOWN_TOPIC_OR_PARTITION
    for _ in range(3):
        r = subprocess.run(
            [broker_cli(), "-b", broker.bootstrap, "topic", "delete", "no-such-topic"],
            capture_output=True, text=True, timeout=30,
        )
        assert r.returncode == 1
    # creating an existing topic: TOPIC_ALREADY_EXISTS
    r = subprocess.run(
        [broker_cli(), "-b", broker.bootstrap, "topic", "create", "m2"],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 1
    s, _ = scrape(broker)
    assert value(s, "sluice_request_errors_total", api="DeleteTopics",
                 error="UNKNOWN_TOPIC_OR_PARTITION") == 3
    assert value(s, "sluice_request_errors_total", api="CreateTopics",
                 error="TOPIC_ALREADY_EXISTS") == 1


def test_openmetrics_when_asked(broker):
    create_topic(broker.bootstrap, "m3")
    produce_all(producer(broker.bootstrap), "m3", [b"x"] * 10)
    status, ctype, text = get(
        broker.http + "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200
    assert ctype.startswith("application/openmetrics-text"), ctype
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in openmetrics_families(text)}
    fam = fams["sluice_partition_messages_in"]
    assert fam.type == "counter"
    [smp] = [x for x in fam.samples if x.labels["topic"] == "m3"]
    assert smp.name == "sluice_partition_messages_in_total" and smp.value == 10
    assert fams["sluice_partition_size_bytes"].unit == "bytes"


def test_health_and_status(broker):
    create_topic(broker.bootstrap, "m4", partitions=3)
    produce_all(producer(broker.bootstrap), "m4", [b"y" * 100] * 50, partition=2)
    status, _, body = get(broker.http + "/v1/health")
    assert status == 200 and json.loads(body)["status"] == "ready"
    st = json.loads(get(broker.http + "/v1/status")[2])
    assert st["topics"] == 1 and st["partitions"] == 3 and st["shards"] == 2
    assert st["version"] and st["uptime_seconds"] > 0
    sizes = sum(p["size_bytes"] for p in snapshot(broker)["partitions"])
    assert st["bytes_stored"] == sizes > 5000
    assert st["listeners"][0]["port"] == broker.port
    # unknown paths and methods
    for path, method, code in [("/nope", "GET", 404), ("/metrics", "POST", 405),
                               ("/v1/topics", "POST", 403)]:
        req = urllib.request.Request(broker.http + path, method=method, data=b"{}")
        try:
            urllib.request.urlopen(req, timeout=10)
            raise AssertionError(f"{method} {path} answered 2xx")
        except urllib.error.HTTPError as e:
            assert e.code == code, (path, e.code)
            assert "error" in json.loads(e.read())


def test_scrapes_answer_during_a_million_message_run(broker):
    create_topic(broker.bootstrap, "big", partitions=2)
    n = 1_000_000
    prod = producer(broker.bootstrap, linger_ms=20, batch_num_messages=10000,
                    queue_buffering_max_messages=500000)
    done = threading.Event()
    errors = []

    def run():
        try:
            for i in range(n):
                while True:
                    try:
                        prod.produce("big", value=b"v" * 20, partition=i % 2)
                        break
                    except BufferError:
                        prod.poll(0.05)
            left = prod.flush(120)
            if left:
                errors.append(f"{left} undelivered")
        except Exception as e:  # reported by the main thread
            errors.append(repr(e))
        finally:
            done.set()

    t = threading.Thread(target=run)
    t.start()
    seen = []
    while not done.is_set():
        s, _ = scrape(broker)
        total = sum(v for (name, _), v in s.items() if name == "sluice_partition_messages_in_total")
        seen.append(total)
        time.sleep(0.2)
    t.join()
    assert not errors, errors
    assert seen == sorted(seen), "messages in never go backwards"
    assert len([x for x in seen if 0 < x < n]) >= 2, f"scrapes answered mid-run: {seen[:10]}"
    s, _ = scrape(broker)
    total = sum(v for (name, _), v in s.items() if name == "sluice_partition_messages_in_total")
    assert total == n


def test_stalled_http_clients_do_not_stall_the_broker(broker):
    create_topic(broker.bootstrap, "m5")
    port = broker.http_port
    # more stalled connections than the listener serves at once, each sending half a request
    socks = []
    for _ in range(80):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    try:
        # the Kafka path does not notice
        produce_all(producer(broker.bootstrap), "m5", [b"z"] * 1000)
        assert len(consume(broker.bootstrap, "m5", [0])) == 1000
    finally:
        for s in socks:
            s.close()
    # once they are gone, scrapes answer again
    deadline = time.monotonic() + 10
    while True:
        try:
            s, _ = scrape(broker)
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            assert time.monotonic() < deadline, "the HTTP listener did not recover"
            time.sleep(0.2)
    assert value(s, "sluice_partition_messages_in_total", topic="m5", partition=0) == 1000


def test_http_off_bad_address_and_busy_port(broker_factory, tmp_path):
    off = broker_factory(overrides=["sluice.http.listen="])
    out = (off.log_dir / f"server-{off.starts}.out").read_text()
    assert "sluice-server http on" not in out
    create_topic(off.bootstrap, "still-works")

    def start_error(value):
        r = subprocess.run(
            [server_binary(), "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "x"),
             "--cores", "1", "--override", f"sluice.http.listen={value}"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        assert r.returncode != 0
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("sluice-server:")]
        assert len(lines) == 1, r.stderr[-2000:]
        return lines[0]

    assert "sluice.http.listen" in start_error("not-an-address")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        line = start_error(f"127.0.0.1:{busy.getsockname()[1]}")
        assert "sluice.http.listen" in line and "in use" in line, line
    finally:
        busy.close()


def test_cluster_metrics_follow_a_broker_failure(cluster):
    """3 brokers, one RF3 partition: the leader reports its followers' lag, and after one
    follower is killed the leader shrinks the ISR and reports the partition under-replicated;
    health stays ready on the survivors and /v1/status says clustered."""
    from test_cluster import create_topics, replicas_in_sync, wait_until
    from helpers import admin

    create_topics(cluster.bootstrap(), [("cm", 1, 3)])
    a = admin(cluster.bootstrap())
    [p] = wait_until("cm in sync", lambda: replicas_in_sync(a.list_topics(timeout=10), "cm", 1, 3),
                     15)
    leader = cluster.brokers[p.leader]
    produce_all(producer(cluster.bootstrap(), acks="all"), "cm", [b"c"] * 100, partition=0)

    def lags():
        s, _ = scrape(leader)
        return {
            dict(labels)["follower"]: v
            for (name, labels), v in s.items()
            if name == "sluice_replica_follower_lag" and dict(labels)["topic"] == "cm"
        }

    followers = sorted(str(b) for b in p.replicas if b != p.leader)
    caught_up = wait_until("followers caught up", lambda: lags() if sorted(lags()) == followers
                           and all(v == 0 for v in lags().values()) else None, 15)
    assert sorted(caught_up) == followers
    s, _ = scrape(leader)
    assert value(s, "sluice_cluster_under_replicated_partitions") == 0
    assert value(s, "sluice_cluster_offline_partitions") == 0
    assert value(s, "sluice_cluster_leader_elections_total") >= 1
    assert value(s, "sluice_partition_high_watermark", topic="cm", partition=0) == 100
    assert value(s, "sluice_cluster_brokers", fenced="false") == 3
    st = json.loads(get(leader.http + "/v1/status")[2])
    assert st["clustered"] is True
    # a group's lag, from the metrics of the group's coordinator and from `sluice group
    # describe` bootstrapped at a broker that does not lead the partition
    c = consumer(cluster.bootstrap(), group_id="cg")
    c.commit(offsets=[TopicPartition("cm", 0, 30)], asynchronous=False)
    c.close()
    other = next(b for i, b in cluster.brokers.items() if i != p.leader)
    cli = subprocess.run(
        [broker_cli(), "-b", other.bootstrap, "--output", "json", "group", "describe", "cg"],
        capture_output=True, text=True, timeout=30,
    )
    assert cli.returncode == 0, cli.stderr
    [described] = json.loads(cli.stdout)
    assert [(r["partition"], r["log_end_offset"], r["lag"]) for r in described["rows"]] == [
        (0, 100, 70)
    ]
    def group_lags():
        got = [v for b in cluster.brokers.values()
               for (name, labels), v in scrape(b)[0].items()
               if name == "sluice_group_lag" and dict(labels)["group"] == "cg"]
        return got if got == [70] else None

    # the coordinator may host a follower copy, whose high watermark trails the leader's by
    # up to a fetch round
    wait_until("the coordinator's lag metric", group_lags, 5)

    victim_id = int(followers[0])
    victim = cluster.brokers[victim_id]
    victim.kill()

    def shrunk():
        s, _ = scrape(leader)
        under = value(s, "sluice_cluster_under_replicated_partitions")
        [part] = [x for x in snapshot(leader)["partitions"] if x["topic"] == "cm"]
        # the ISR change is counted when the leader's reconcile loop (every 100 ms) sees it
        shrinks = value(s, "sluice_cluster_isr_shrinks_total")
        return s if under >= 1 and shrinks >= 1 and victim_id not in part["isr"] else None

    s = wait_until("the leader reports cm-0 under-replicated and the ISR shrink", shrunk, 30)
    status, _, body = get(leader.http + "/v1/health")
    assert status == 200, body
    snap = snapshot(leader)
    [part] = [x for x in snap["partitions"] if x["topic"] == "cm"]
    assert part["leader"] == p.leader
    # every partition the leader leads lost that replica: all of them are under-replicated
    led = [x for x in snap["partitions"] if x["leader"] == p.leader]
    assert value(s, "sluice_cluster_under_replicated_partitions") == len(
        [x for x in led if len(x["isr"]) < len(x["replicas"])]
    ) >= 1


def post(url, body, auth=None):
    import base64

    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_console_writes_go_through_the_switch_and_the_authorizer(broker_factory):
    """Creating topics and deleting records over HTTP: refused while
    sluice.http.console.write.enable is off; with it on and ACLs on, only for HTTP Basic
    credentials of a SASL user the ACLs allow (the same check as the Kafka API)."""
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                       ResourcePatternType, ResourceType)
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient
    from test_acls import JAAS, conf

    b = broker_factory(overrides=[
        "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        JAAS,
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:admin",
        "sluice.http.console.write.enable=true",
    ])
    topics = b.http + "/v1/topics"
    assert post(topics, {"name": "web1", "partitions": 2})[0] == 401  # no credentials
    code, body = post(topics, {"name": "web1", "partitions": 2}, auth=("usercc", "wrong"))
    assert code == 401, body
    code, body = post(topics, {"name": "web1", "partitions": 2}, auth=("usercc", "cc-secret"))
    assert (code, body["error"]) == (403, "TOPIC_AUTHORIZATION_FAILED"), body
    # granted CREATE on the topic, the same user may
    a = AdminClient(conf(b, "admin", "admin-secret"))
    fs = a.create_acls([AclBinding(ResourceType.TOPIC, "web1", ResourcePatternType.LITERAL,
                                   "User:usercc", "*", AclOperation.CREATE,
                                   AclPermissionType.ALLOW)])
    for f in fs.values():
        f.result(30)
    code, body = post(topics, {"name": "web1", "partitions": 2}, auth=("usercc", "cc-secret"))
    assert (code, body["error"]) == (200, "NONE"), body
    md = a.list_topics(timeout=10)
    assert len(md.topics["web1"].partitions) == 2
    code, body = post(topics, {"name": "web1"}, auth=("admin", "admin-secret"))
    assert (code, body["error"]) == (400, "TOPIC_ALREADY_EXISTS"), body
    code, body = post(topics, {"name": "bad name!"}, auth=("admin", "admin-secret"))
    assert code == 400 and body["error"] == "INVALID_TOPIC_EXCEPTION", body
    code, body = post(topics, {"nam": "x"}, auth=("admin", "admin-secret"))
    assert code == 400 and "bad JSON" in body["error"], body
    # delete records: usercc has no DELETE; admin (super user) may
    p = Producer(conf(b, "admin", "admin-secret"))
    for i in range(10):
        p.produce("web1", value=b"%d" % i, partition=0)
    assert p.flush(30) == 0
    url = b.http + "/v1/topics/web1/delete-records"
    code, body = post(url, {"partition": 0, "before_offset": 4}, auth=("usercc", "cc-secret"))
    assert (code, body["error"]) == (403, "TOPIC_AUTHORIZATION_FAILED"), body
    code, body = post(url, {"partition": 0, "before_offset": 4}, auth=("admin", "admin-secret"))
    assert code == 200 and body["result"]["low_watermark"] == 4, body
    code, body = post(b.http + "/v1/topics/nope/delete-records",
                      {"partition": 0, "before_offset": 1}, auth=("admin", "admin-secret"))
    assert code in (400, 403), body
    s, _ = scrape(b)
    assert value(s, "sluice_partition_log_start_offset", topic="web1", partition=0) == 4


def test_console_writes_are_off_by_default(broker):
    code, body = post(broker.http + "/v1/topics", {"name": "nope"})
    assert code == 403 and "sluice.http.console.write.enable" in body["error"]
    code, body = post(broker.http + "/v1/topics/x/delete-records",
                      {"partition": 0, "before_offset": 1})
    assert code == 403
