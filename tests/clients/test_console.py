"""The web console (server/src/http/console/) in a real headless Chromium driven by selenium:
the numbers it renders equal the broker's (/v1/snapshot, and what the test produced and
committed), its two canvas charts are drawn from the deltas between polls, text from the
broker is escaped, and the create-topic / delete-records forms exist only with
sluice.http.console.write.enable and work through the Kafka API (with HTTP Basic credentials
when ACLs are on).

Needs Debian's `chromium` and `chromium-driver` (tests/run.sh installs them); a missing browser
fails the tests rather than skipping them. Each test saves a screenshot of its final page in
its tmp dir (printed), and also in $SLUICE_CONSOLE_ARTIFACTS when that is set.
"""

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from helpers import admin, consumer, create_topic, produce_all, producer
from test_acls import JAAS, conf
from test_cluster import cluster  # noqa: F401 (fixture)
from test_cluster import create_topics, replicas_in_sync

WAIT = 15.0
WRITES_ON = "sluice.http.console.write.enable=true"
SECURED = [
    "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
    JAAS,
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users=User:admin",
]


# ---- the browser -----------------------------------------------------------------------

def _find(env, names):
    p = os.environ.get(env)
    if p:
        return p if Path(p).is_file() else None
    for n in names:
        found = shutil.which(n)
        if found:
            return found
    for d in ("/usr/bin", "/usr/lib/chromium"):
        for n in names:
            if Path(d, n).is_file():
                return str(Path(d, n))
    return None


@pytest.fixture
def browser(request, tmp_path, capsys):
    """A headless Chromium (Debian's chromium + chromium-driver) through selenium. At the end
    the page is saved as console.png in the test's tmp dir."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.fail(f"selenium is missing ({e}): pip install -r tests/requirements.txt")
    chrome = _find("SLUICE_CHROMIUM", ["chromium", "chromium-browser", "google-chrome"])
    driver_bin = _find("SLUICE_CHROMEDRIVER", ["chromedriver", "chromium-driver"])
    if not chrome or not driver_bin:
        pytest.fail(
            "the console tests need a headless Chromium and its driver: "
            f"chromium={chrome!r}, chromedriver={driver_bin!r}. Install them with "
            "`apt-get install chromium chromium-driver` (tests/run.sh does), or point "
            "SLUICE_CHROMIUM / SLUICE_CHROMEDRIVER at them"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--force-device-scale-factor=1",
              f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium must not try to download one
    d = webdriver.Chrome(service=Service(driver_bin, log_output=str(tmp_path / "chromedriver.log")),
                         options=opts)
    d.set_script_timeout(30)
    try:
        yield d
    finally:
        try:
            if d.current_url.startswith("http"):
                h = d.execute_script("return document.documentElement.scrollHeight")
                d.set_window_size(1400, min(int(h) + 40, 6000))
                d.execute_script("window.scrollTo(0, 0)")
            shot = tmp_path / "console.png"
            d.save_screenshot(str(shot))
            extra = os.environ.get("SLUICE_CONSOLE_ARTIFACTS")
            copies = [shot]
            if extra:
                Path(extra).mkdir(parents=True, exist_ok=True)
                dest = Path(extra) / f"{request.node.name}.png"
                shutil.copyfile(shot, dest)
                copies.append(dest)
            with capsys.disabled():
                print(f"\n[console screenshot] {request.node.name}: "
                      + ", ".join(str(c) for c in copies))
            # refused writes (4xx the test asked for) are logged by Chromium as failed loads
            errors = [e for e in d.get_log("browser")
                      if e["level"] == "SEVERE" and "/v1/topics" not in e["message"]]
        finally:
            d.quit()
    # the page must not have logged errors (failed loads, exceptions in console.js)
    assert not errors, f"browser console errors: {errors}"


def wait_for(what, fn, timeout=WAIT, interval=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except Exception as e:  # noqa: BLE001 (an element not there yet)
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def open_console(d, broker, polls=2):
    d.get(broker.http + "/")
    wait_until_polls(d, polls)


def polls(d):
    return int(d.execute_script("return document.body.dataset.polls || '0'"))


def wait_until_polls(d, n):
    wait_for(f"{n} polls of /v1/snapshot", lambda: polls(d) >= n)


def wait_more_polls(d, n=2):
    """Waits for `n` more complete refreshes (the data asked for after now is on the page)."""
    start = polls(d)
    wait_until_polls(d, start + n)


# every row of a table that has a data-`key` attribute: {attrs, fields: {f: data-value},
# text: {f: textContent}}
ROWS_JS = """
const [selector] = arguments;
return Array.from(document.querySelectorAll(selector)).map((tr) => {
  const fields = {}, text = {};
  for (const td of tr.querySelectorAll('[data-field]')) {
    if (td.closest('tr') !== tr) continue;
    fields[td.dataset.field] = td.dataset.value === undefined ? null : td.dataset.value;
    text[td.dataset.field] = td.textContent;
  }
  return {attrs: Object.assign({}, tr.dataset), fields, text};
});
"""


def rows(d, selector):
    return d.execute_script(ROWS_JS, selector)


def topic_rows(d):
    return {r["attrs"]["topic"]: r for r in rows(d, "#topics tr.topic")}


def partition_rows(d, topic):
    return {int(r["attrs"]["partition"]): r
            for r in rows(d, f'#topics tr.partition[data-topic="{topic}"]')}


def expand(d, kind, name):
    """Opens a topic's or a group's detail row (idempotent)."""
    attr = "topic" if kind == "topic" else "group"
    d.execute_script(
        "const [attr, name] = arguments;"
        "const tr = Array.from(document.querySelectorAll(`#${attr}s tr.${attr}`))"
        "  .find((r) => r.dataset[attr] === name);"
        "const b = tr.querySelector('button.toggle');"
        "if (b.getAttribute('aria-expanded') !== 'true') b.click();",
        attr, name)


def text(d, id_):
    return d.find_element("id", id_).text


def data_value(d, id_):
    return d.find_element("id", id_).get_attribute("data-value")


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def snapshot(broker):
    return get_json(broker.http + "/v1/snapshot")


def element_exists(d, css):
    return len(d.find_elements("css selector", css)) > 0


# ---- tests -----------------------------------------------------------------------------

def test_console_shows_the_brokers_numbers(broker, browser):
    """Known data (two topics, exact counts per partition, a group committed below the end, a
    live member) renders exactly: header, summary, brokers, topics and partitions, groups,
    offsets, lag and members. Group ids and client ids with markup appear as text."""
    d = browser
    b = broker.bootstrap
    create_topic(b, "t1", partitions=3)
    create_topic(b, "t2", partitions=1)
    prod = producer(b)
    counts = {("t1", 0): 120, ("t1", 1): 45, ("t1", 2): 0, ("t2", 0): 80}
    for (t, p), n in counts.items():
        if n:
            produce_all(prod, t, [b"v%05d" % i for i in range(n)], partition=p)
    committed = {("t1", 0): 100, ("t1", 1): 5, ("t2", 0): 30}
    c = consumer(b, group_id="lagging")
    c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in committed.items()],
             asynchronous=False)
    c.close()
    evil_group = '<img src=x onerror="window.__pwned=1">'
    c = consumer(b, group_id=evil_group)
    c.commit(offsets=[TopicPartition("t2", 0, 1)], asynchronous=False)
    c.close()
    # a live member with markup in its client id
    evil_client = '<b id="injected">x</b><script>window.__pwned=2</script>'
    live = Consumer({"bootstrap.servers": b, "group.id": "live", "client.id": evil_client,
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        live.subscribe(["t2"])
        wait_for("the live consumer's assignment", lambda: live.poll(0.2) is not None
                 or live.assignment(), timeout=30)

        open_console(d, broker)
        wait_for("topics and groups rendered", lambda: {"t1", "t2"} <= set(topic_rows(d))
                 and len(rows(d, "#groups tr.group")) == 3)
        expand(d, "topic", "t1")
        expand(d, "topic", "t2")
        for g in ("lagging", "live", evil_group):
            expand(d, "group", g)
        wait_for("members of the live group", lambda: rows(d, "#groups tr[data-member]"))
        wait_more_polls(d)  # a refresh with everything expanded
        snap = snapshot(broker)
        status, s = snap["status"], snap["snapshot"]

        # header
        assert text(d, "status-version") == status["version"]
        assert text(d, "status-node-id") == str(status["node_id"])
        assert text(d, "status-cluster-id") == status["cluster_id"]
        assert text(d, "status-shards") == str(status["shards"])
        assert 0 < float(data_value(d, "status-uptime")) <= status["uptime_seconds"]
        assert d.find_element("id", "poll-state").get_attribute("data-state") == "live"

        # summary cards
        assert data_value(d, "sum-topics") == "2"
        assert data_value(d, "sum-partitions") == "4"
        assert int(data_value(d, "sum-messages")) == sum(counts.values()) == 245
        assert int(data_value(d, "sum-bytes")) == sum(p["size_bytes"] for p in s["partitions"])

        # brokers: this one alone
        [br] = rows(d, "#brokers tr[data-broker]")
        assert br["attrs"]["broker"] == str(status["node_id"])
        assert br["fields"]["host"] == "127.0.0.1"
        assert br["fields"]["port"] == str(broker.port)
        assert br["text"]["state"] == "single node"

        # topics and their partitions, against what was produced and against the snapshot
        topics = topic_rows(d)
        assert sorted(topics) == ["t1", "t2"]
        by_tp = {(p["topic"], p["partition"]): p for p in s["partitions"]}
        for t, n_parts in [("t1", 3), ("t2", 1)]:
            f = topics[t]["fields"]
            assert f["partitions"] == str(n_parts)
            want = sum(n for (tt, _), n in counts.items() if tt == t)
            assert int(f["messages"]) == want
            assert int(f["size"]) == sum(p["size_bytes"] for p in s["partitions"]
                                         if p["topic"] == t)
            parts = partition_rows(d, t)
            assert sorted(parts) == list(range(n_parts))
            for p, r in parts.items():
                sp = by_tp[(t, p)]
                pf = r["fields"]
                n = counts[(t, p)]
                assert int(pf["log_start"]) == sp["log_start"] == 0
                assert int(pf["high_watermark"]) == sp["high_watermark"] == n
                assert int(pf["log_end"]) == sp["log_end"] == n
                assert int(pf["messages"]) == n
                assert int(pf["size"]) == sp["size_bytes"]
                assert int(pf["segments"]) == sp["segments"]
                assert int(pf["leader"]) == sp["leader"] == status["node_id"]
                assert pf["replicas"] == ",".join(map(str, sp["replicas"]))
                assert pf["isr"] == ",".join(map(str, sp["isr"]))
            # no write actions while console writes are off
            assert not element_exists(d, '[data-action="delete-records"]')

        # groups: state, members, total lag, offsets per partition
        groups = {r["attrs"]["group"]: r for r in rows(d, "#groups tr.group")}
        assert sorted(groups) == sorted(["lagging", "live", evil_group])
        lg = groups["lagging"]["fields"]
        lags = {tp: counts[tp] - o for tp, o in committed.items()}
        assert lags == {("t1", 0): 20, ("t1", 1): 40, ("t2", 0): 50}
        assert groups["lagging"]["text"]["state"] == "Empty"
        assert lg["members"] == "0"
        assert int(lg["lag"]) == sum(lags.values()) == 110
        off = {(r["attrs"]["topic"], int(r["attrs"]["partition"])): r["fields"]
               for r in rows(d, '#groups tr[data-group-detail="lagging"] tr[data-partition]')}
        assert sorted(off) == sorted(committed)
        sg = {g["group"]: g for g in s["groups"]}
        for tp, o in committed.items():
            assert int(off[tp]["offset"]) == o
            assert int(off[tp]["log_end"]) == counts[tp]
            assert int(off[tp]["lag"]) == lags[tp]
            [so] = [x for x in sg["lagging"]["offsets"] if (x["topic"], x["partition"]) == tp]
            assert (so["offset"], so["log_end"], so["lag"]) == (o, counts[tp], lags[tp])

        lv = groups["live"]
        assert lv["text"]["state"] == sg["live"]["state"] == "Stable"
        assert lv["fields"]["members"] == "1"
        [m] = rows(d, '#groups tr[data-group-detail="live"] tr[data-member]')
        [sm] = sg["live"]["member_details"]
        assert m["text"]["member_id"] == sm["member_id"]
        assert m["text"]["client_id"] == evil_client == sm["client_id"]
        assert m["text"]["host"] == sm["host"]

        # markup from the broker stayed text
        assert groups[evil_group]["text"]["group"] == evil_group
        assert int(groups[evil_group]["fields"]["lag"]) == 79
        assert not element_exists(d, "#injected")
        assert not element_exists(d, "#groups img")
        assert d.execute_script("return window.__pwned === undefined")
    finally:
        live.close()


def test_with_writes_off_the_forms_are_absent_and_posts_refused(broker, browser):
    d = browser
    create_topic(broker.bootstrap, "ro", partitions=2)
    open_console(d, broker)
    wait_for("topic ro", lambda: "ro" in topic_rows(d))
    expand(d, "topic", "ro")
    wait_for("partitions of ro", lambda: len(partition_rows(d, "ro")) == 2)
    assert d.execute_script("return window.sluiceConsole.status.console_write") is False
    for css in ["#write-section", "#create-topic-form", "#create-name", "#auth-user",
                '[data-action="delete-records"]', '[data-field="delete-offset"]']:
        assert not element_exists(d, css), css
    # the endpoints refuse, from the page's own origin too
    answers = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const post = (url, body) => fetch(url, {method: 'POST', body: JSON.stringify(body),
            headers: {'Content-Type': 'application/json'}})
          .then(async (r) => [r.status, await r.json()]);
        Promise.all([post('/v1/topics', {name: 'nope', partitions: 1}),
                     post('/v1/topics/ro/delete-records', {partition: 0, before_offset: 0})])
          .then(done, (e) => done(String(e)));
    """)
    for code, body in answers:
        assert code == 403, answers
        assert "sluice.http.console.write.enable" in body["error"]
    md = admin(broker.bootstrap).list_topics(timeout=10)
    assert "nope" not in md.topics


def test_charts_are_drawn_from_deltas_while_producing(broker, browser):
    """While 3000 messages are produced (acks=all, so fdatasyncs happen) the throughput chart's
    points add up to exactly what was produced, the fdatasync p50/p99 are bucket upper bounds
    recomputed here from the same deltas, and both canvases carry the series' colours."""
    d = browser
    create_topic(broker.bootstrap, "c1", partitions=2)
    open_console(d, broker, polls=2)
    blank = d.execute_script("""
        return ['chart-throughput', 'chart-sync'].map((id) => {
          const c = document.getElementById(id), b = document.createElement('canvas');
          b.width = c.width; b.height = c.height;
          return [c.toDataURL(), b.toDataURL()];
        });""")
    for drawn, empty in blank:
        assert drawn != empty  # axes and labels at least
    before = snapshot(broker)["snapshot"]
    n, batches = 3000, 6
    errors = []

    def produce():
        try:
            p = producer(broker.bootstrap, acks="all")
            for i in range(batches):
                produce_all(p, "c1", [b"m%06d" % j for j in range(n // batches)],
                            partition=i % 2)
                time.sleep(0.4)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=produce)
    t.start()
    # while producing, the messages line rises above the zero line
    wait_for("a non-zero messages/s on the page",
             lambda: float(data_value(d, "rate-messages-in") or 0) > 0)
    t.join(60)
    assert not errors, errors
    after = snapshot(broker)["snapshot"]
    wait_more_polls(d, 2)
    hist = d.execute_script("return window.sluiceConsole.history")
    assert 3 <= len(hist) <= 60

    def total(s, key):
        return sum(p[key] for p in s["partitions"])

    produced = total(after, "messages_in") - total(before, "messages_in")
    assert produced == n
    assert sum(p["messages"] for p in hist) == n
    assert sum(p["bytes_in"] for p in hist) == total(after, "bytes_in") - total(before, "bytes_in")
    assert sum(p["bytes_out"] for p in hist) == total(after, "bytes_out") - total(
        before, "bytes_out")
    for p in hist:
        assert p["dt"] > 0
        assert abs(p["messages_per_s"] - p["messages"] / p["dt"]) < 1e-6
        assert abs(p["bytes_in_per_s"] - p["bytes_in"] / p["dt"]) < 1e-6
    assert max(p["messages_per_s"] for p in hist) > 0
    # per-topic messages/s is the last interval's rate
    last = hist[-1]
    assert float(topic_rows(d)["c1"]["fields"]["rate"]) == pytest.approx(
        last["messages_per_s"], abs=1e-6)
    assert float(data_value(d, "rate-messages-in")) == pytest.approx(last["messages_per_s"])

    # fdatasync latency: quantiles of the bucket deltas, shown as the bucket's upper bound
    bounds = get_json(broker.http + "/v1/snapshot")["latency_bounds_seconds"]
    synced = sum(after["storage"]["sync_latency"]["counts"]) - sum(
        before["storage"]["sync_latency"]["counts"])
    assert synced >= 1
    assert sum(p["syncs"] for p in hist) >= synced

    def bound(counts, q):
        total_ = sum(counts)
        if total_ == 0:
            return None
        rank, cum = max(1, -(-q * total_ // 1)), 0
        for i, c in enumerate(counts):
            cum += c
            if cum >= rank:
                return bounds[i] if i < len(bounds) else "inf"
        return "inf"

    with_syncs = [p for p in hist if p["syncs"]]
    assert with_syncs
    for p in hist:
        assert len(p["sync_counts"]) == len(bounds) + 1
        assert sum(p["sync_counts"]) == p["syncs"]
        assert p["p50"] == bound(p["sync_counts"], 0.5)
        assert p["p99"] == bound(p["sync_counts"], 0.99)
        if p["syncs"]:
            assert p["p50"] in bounds and p["p99"] in bounds and p["p50"] <= p["p99"]
    lat = with_syncs[-1]
    assert float(data_value(d, "sync-p50")) == lat["p50"]
    assert float(data_value(d, "sync-p99")) == lat["p99"]
    assert text(d, "sync-p99").startswith("≤ ")

    # both canvases: redrawn with every point, the series' colours present, the messages line
    # drawn above its zero line
    assert int(d.find_element("id", "chart-throughput").get_attribute("data-points")) == len(hist)
    pixels = d.execute_script("""
        const near = (d, i, rgb) => Math.abs(d[i] - rgb[0]) < 40 && Math.abs(d[i + 1] - rgb[1]) < 40
          && Math.abs(d[i + 2] - rgb[2]) < 40 && d[i + 3] > 200;
        const scan = (id, colours) => {
          const c = document.getElementById(id);
          const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          return colours.map((rgb) => {
            let n = 0, minY = c.height, maxY = -1;
            for (let i = 0; i < data.length; i += 4) {
              if (near(data, i, rgb)) {
                n++;
                const y = Math.floor(i / 4 / c.width);
                minY = Math.min(minY, y); maxY = Math.max(maxY, y);
              }
            }
            return {n, minY, maxY};
          });
        };
        return {throughput: scan('chart-throughput', [[0x2f, 0x6f, 0xd0], [0x2a, 0x9d, 0x4b]]),
                sync: scan('chart-sync', [[0x2f, 0x6f, 0xd0], [0xe0, 0x8a, 0x00]])};
    """)
    msg, bytes_in = pixels["throughput"]
    assert msg["n"] > 20 and bytes_in["n"] > 20, pixels
    assert msg["maxY"] - msg["minY"] > 20, pixels  # the line rises, not only the zero line
    p50, p99 = pixels["sync"]
    assert p99["n"] > 5, pixels
    # p99 is drawn over p50: p50 shows where the two differ
    assert p50["n"] > 5 or all(p["p50"] == p["p99"] for p in hist), pixels


def submit_create(d, name, partitions=None, configs=None):
    """Fills and submits the create-topic form; returns (HTTP status, error, shown text)."""
    out = d.find_element("id", "create-result")
    d.execute_script("arguments[0].dataset.status = ''", out)
    f = d.find_element("id", "create-name")
    f.clear()
    f.send_keys(name)
    if partitions is not None:
        p = d.find_element("id", "create-partitions")
        p.clear()
        p.send_keys(str(partitions))
    if configs is not None:
        c = d.find_element("id", "create-configs")
        c.clear()
        c.send_keys(configs)
    d.find_element("id", "create-submit").click()
    # data-status is 0 while the request is out, the HTTP status once answered
    wait_for("the create-topic answer",
             lambda: out.get_attribute("data-status") not in (None, "", "0"))
    return int(out.get_attribute("data-status")), out.get_attribute("data-error"), out.text


def delete_records(d, topic, partition, offset):
    row = wait_for(f"partition row {topic}/{partition}", lambda: d.find_element(
        "css selector", f'#topics tr.partition[data-topic="{topic}"][data-partition="{partition}"]'))
    inp = row.find_element("css selector", '[data-field="delete-offset"]')
    inp.clear()
    inp.send_keys(str(offset))
    out = row.find_element("css selector", '[data-field="delete-result"]')
    d.execute_script("arguments[0].dataset.status = ''", out)
    row.find_element("css selector", '[data-action="delete-records"]').click()
    wait_for("the delete-records answer",
             lambda: out.get_attribute("data-status") not in (None, "", "0"))
    return int(out.get_attribute("data-status")), out.get_attribute("data-error"), out.text


def test_create_topic_and_delete_records_through_the_console(broker_factory, browser):
    """With console writes on: the form creates a topic that the table and the Kafka protocol
    both show (configs included); errors are shown by name; delete-records moves the log start
    offset, on the page and for a Kafka client."""
    d = browser
    br = broker_factory(overrides=[WRITES_ON])
    open_console(d, br)
    form = wait_for("the create-topic form", lambda: d.find_element("id", "create-topic-form"))
    assert form.is_displayed()
    assert not d.find_element("id", "auth-box").is_displayed()  # no ACLs: no credentials asked

    code, err, msg = submit_create(d, "from-console", 3, "retention.ms=3600000")
    assert (code, err) == (200, "NONE"), msg
    assert "created topic from-console with 3 partitions" in msg
    wait_for("from-console in the topic table",
             lambda: topic_rows(d).get("from-console", {}).get("fields", {}).get("partitions")
             == "3")
    a = AdminClient({"bootstrap.servers": br.bootstrap})
    md = a.list_topics(timeout=10)
    assert len(md.topics["from-console"].partitions) == 3
    res = ConfigResource(ConfigResource.Type.TOPIC, "from-console")
    cfg = a.describe_configs([res])[res].result(30)
    assert cfg["retention.ms"].value == "3600000"

    # errors come back by name, without a reload
    d.execute_script("window.__same_page = true")
    code, err, msg = submit_create(d, "from-console", 1)
    assert (code, err) == (400, "TOPIC_ALREADY_EXISTS"), msg
    code, err, msg = submit_create(d, "..", 1)
    assert (code, err) == (400, "INVALID_TOPIC_EXCEPTION"), msg
    assert 'cannot be "." or ".."' in msg  # the broker's message is shown too
    assert d.execute_script("return window.__same_page === true")

    # delete records below offset 4 of partition 1
    produce_all(producer(br.bootstrap), "from-console", [b"x%d" % i for i in range(10)],
                partition=1)
    expand(d, "topic", "from-console")
    wait_for("log end 10 on the page",
             lambda: partition_rows(d, "from-console")[1]["fields"]["log_end"] == "10")
    code, err, msg = delete_records(d, "from-console", 1, 4)
    assert (code, err) == (200, "NONE"), msg
    assert "log start is now 4" in msg
    wait_for("log start 4 on the page",
             lambda: partition_rows(d, "from-console")[1]["fields"]["log_start"] == "4")
    wait_for("6 messages in the topic row",
             lambda: topic_rows(d)["from-console"]["fields"]["messages"] == "6")
    c = Consumer({"bootstrap.servers": br.bootstrap, "group.id": "wm"})
    try:
        assert c.get_watermark_offsets(TopicPartition("from-console", 1), timeout=10) == (4, 10)
    finally:
        c.close()
    assert snapshot(br)["snapshot"]["partitions"][1]["log_start"] == 4
    # beyond the high watermark: the broker's error, shown by name
    code, err, msg = delete_records(d, "from-console", 1, 99)
    assert (code, err) == (400, "OFFSET_OUT_OF_RANGE"), msg


def test_with_acls_the_console_sends_basic_credentials(broker_factory, browser):
    """ACLs on: the console asks for credentials and sends them as HTTP Basic; no or wrong
    credentials answer 401, a user without CREATE 403, the super user creates the topic."""
    d = browser
    br = broker_factory(overrides=[*SECURED, WRITES_ON])
    open_console(d, br)
    wait_for("the credentials box", lambda: d.find_element("id", "auth-box").is_displayed())

    def creds(user, password):
        for id_, v in (("auth-user", user), ("auth-pass", password)):
            e = d.find_element("id", id_)
            e.clear()
            if v:
                e.send_keys(v)

    creds("", "")
    code, err, msg = submit_create(d, "secured", 2)
    assert code == 401 and "HTTP Basic" in err, msg
    creds("usercc", "wrong")
    code, err, msg = submit_create(d, "secured", 2)
    assert (code, err) == (401, "authentication failed"), msg
    creds("usercc", "cc-secret")
    code, err, msg = submit_create(d, "secured", 2)
    assert (code, err) == (403, "TOPIC_AUTHORIZATION_FAILED"), msg
    creds("admin", "admin-secret")
    code, err, msg = submit_create(d, "secured", 2)
    assert (code, err) == (200, "NONE"), msg
    wait_for("secured in the topic table", lambda: "secured" in topic_rows(d))
    a = AdminClient(conf(br, "admin", "admin-secret"))
    assert len(a.list_topics(timeout=10).topics["secured"].partitions) == 2

    p = Producer(conf(br, "admin", "admin-secret"))
    for i in range(5):
        p.produce("secured", value=b"%d" % i, partition=0)
    assert p.flush(30) == 0
    expand(d, "topic", "secured")
    wait_for("log end 5", lambda: partition_rows(d, "secured")[0]["fields"]["log_end"] == "5")
    creds("usercc", "cc-secret")
    code, err, msg = delete_records(d, "secured", 0, 2)
    assert (code, err) == (403, "TOPIC_AUTHORIZATION_FAILED"), msg
    creds("admin", "admin-secret")
    code, err, msg = delete_records(d, "secured", 0, 2)
    assert (code, err) == (200, "NONE"), msg
    wait_for("log start 2", lambda: partition_rows(d, "secured")[0]["fields"]["log_start"] == "2")


def test_a_cluster_lists_its_brokers_and_follows_a_failure(cluster, browser):
    """3 brokers: the leader's console lists all of them with their addresses, the partition's
    replicas and ISR; after a follower is killed it shows that broker fenced, the ISR shrunk
    and the partition under-replicated."""
    d = browser
    create_topics(cluster.bootstrap(), [("cc", 1, 3)])
    a = admin(cluster.bootstrap())
    [p] = wait_for("cc in sync",
                   lambda: replicas_in_sync(a.list_topics(timeout=10), "cc", 1, 3), timeout=15)
    leader = cluster.brokers[p.leader]
    produce_all(producer(cluster.bootstrap(), acks="all"), "cc", [b"c"] * 50, partition=0)
    open_console(d, leader)
    expand(d, "topic", "cc")
    wait_for("3 active brokers and cc-0 in sync", lambda: len(rows(d, "#brokers tr[data-broker]"))
             == 3 and partition_rows(d, "cc")[0]["fields"]["isr"].count(",") == 2
             and partition_rows(d, "cc")[0]["fields"]["high_watermark"] == "50")
    snap = snapshot(leader)
    assert text(d, "status-cluster-id") == snap["snapshot"]["cluster"]["cluster_id"] == snap[
        "status"]["cluster_id"]
    assert text(d, "status-node-id") == str(p.leader)
    shown = {int(r["attrs"]["broker"]): r for r in rows(d, "#brokers tr[data-broker]")}
    assert sorted(shown) == sorted(cluster.brokers)
    for i, b in cluster.brokers.items():
        assert (shown[i]["fields"]["host"], int(shown[i]["fields"]["port"])) == (
            "127.0.0.1", b.port)
        assert shown[i]["text"]["state"] == "active"
    assert shown[p.leader]["text"]["id"] == f"{p.leader} (this broker)"
    [sp] = [x for x in snap["snapshot"]["partitions"] if x["topic"] == "cc"]
    row = partition_rows(d, "cc")[0]["fields"]
    assert int(row["leader"]) == sp["leader"] == p.leader
    assert row["replicas"] == ",".join(map(str, sp["replicas"]))
    assert sorted(map(int, row["isr"].split(","))) == sorted(sp["isr"]) == sorted(p.replicas)
    assert data_value(d, "cluster-under-replicated") == "0"
    assert data_value(d, "cluster-offline") == "0"

    victim = next(i for i in p.replicas if i != p.leader)
    cluster.brokers[victim].kill()

    def shrunk():
        r = partition_rows(d, "cc")[0]["fields"]
        states = {int(x["attrs"]["broker"]): x["text"]["state"]
                  for x in rows(d, "#brokers tr[data-broker]")}
        return (str(victim) not in r["isr"].split(",")
                and int(data_value(d, "cluster-under-replicated")) >= 1
                and states.get(victim) == "fenced")

    wait_for(f"broker {victim} fenced and out of cc-0's ISR on the page", shrunk, timeout=30)
    wait_more_polls(d)
    snap = snapshot(leader)["snapshot"]
    # the leader leads internal partitions too: every one it leads lost that replica
    led = [x for x in snap["partitions"] if x["leader"] == p.leader]
    under = len([x for x in led if len(x["isr"]) < len(x["replicas"])])
    assert int(data_value(d, "cluster-under-replicated")) == under == snap["cluster"][
        "under_replicated_partitions"]
    assert int(data_value(d, "cluster-isr-shrinks")) >= 1
    assert "bad" in d.find_element(
        "css selector", f'#brokers tr[data-broker="{victim}"]').get_attribute("class")
