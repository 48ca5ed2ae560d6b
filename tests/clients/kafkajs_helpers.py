"""Drives kafkajs (npm, installed into tests/clients/js/node_modules by tests/run.sh with
`npm ci`) through the small node scripts in tests/clients/js/: each takes one JSON object and
prints one JSON object on stdout. Bytes travel as base64 strings (None as null); headers as
[[name, base64], ...]. KAFKAJS_LOG_LEVEL=debug in the environment makes kafkajs log every
request it sends (on the scripts' stderr, shown when a call fails)."""

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import Rec

JS = Path(__file__).resolve().parent / "js"
NODE = os.environ.get("SLUICE_NODE", "node")


def require_kafkajs():
    if shutil.which(NODE) is None:
        pytest.fail(f"{NODE} not found: tests/run.sh installs nodejs")
    if not (JS / "node_modules" / "kafkajs" / "package.json").is_file():
        pytest.fail(f"kafkajs not installed: run `npm ci --prefix {JS}` (tests/run.sh does)")


def b64(data):
    return None if data is None else base64.b64encode(data).decode()


def unb64(text):
    return None if text is None else base64.b64decode(text)


def node(script, payload, timeout=60):
    """Runs tests/clients/js/`script` with `payload` on stdin; returns its JSON output."""
    require_kafkajs()
    r = subprocess.run(
        [NODE, str(JS / script)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, KAFKAJS_NO_PARTITIONER_WARNING="1"),
    )
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and lines, (
        f"node {script} exited {r.returncode}\nstdout:\n{r.stdout[-3000:]}\n"
        f"stderr:\n{r.stderr[-6000:]}"
    )
    out = json.loads(lines[-1])
    out["_stderr"] = r.stderr
    return out


def message(value, key=None, headers=(), partition=None, timestamp=None):
    """One message for produce.js."""
    m = {"key": b64(key), "value": b64(value), "headers": [[k, b64(v)] for k, v in headers]}
    if partition is not None:
        m["partition"] = partition
    if timestamp is not None:
        m["timestamp"] = timestamp
    return m


def send(topic, messages, acks=-1, compression="none"):
    return {"send": {"topic": topic, "messages": messages, "acks": acks,
                     "compression": compression}}


def produce(bootstrap, steps, **producer_conf):
    """Runs produce.js; returns the list of step results. Every step must have succeeded."""
    out = node("produce.js", {"brokers": [bootstrap], "producer": producer_conf,
                              "steps": steps})
    for step, res in zip(steps, out["steps"]):
        assert "error" not in res, f"kafkajs step {step} failed: {res['error']}\n" + out[
            "_stderr"][-6000:]
    assert len(out["steps"]) == len(steps)
    return out["steps"]


def consume(bootstrap, topic, **extra):
    """Every record of `topic` read from the beginning by kafkajs, as Recs (timestamp set)."""
    out = node("consume.js", {"brokers": [bootstrap], "topic": topic, **extra})
    assert "timeout" not in out, (
        f"kafkajs never reached the end of partitions {out['timeout']}; got "
        f"{len(out['records'])} records\n{out['_stderr'][-6000:]}"
    )
    return [
        Rec(r["partition"], r["offset"], unb64(r["key"]), unb64(r["value"]),
            tuple((k, unb64(v)) for k, v in r["headers"]), r["timestamp"])
        for r in out["records"]
    ]


def admin(bootstrap, *calls):
    """Runs admin.js with calls given as (method, arg, ...); returns the list of results, each
    {"ok": value} or {"error": {...}}."""
    out = node("admin.js", {"brokers": [bootstrap],
                            "calls": [{"method": c[0], "args": list(c[1:])} for c in calls]})
    out["results"] = [dict(r, _stderr=out["_stderr"]) for r in out["results"]]
    return out["results"]


def ok(result):
    """The value of an admin.js result that must have succeeded."""
    assert "error" not in result, f"kafkajs admin call failed: {result['error']}\n" + result[
        "_stderr"][-6000:]
    return result["ok"]
