"""Fixtures for the real-client compatibility suite: one sluice-server per test.

The binary comes from $SLUICE_SERVER_BIN (tests/run.sh builds it), defaulting to the debug
build in target/. Each test gets a broker on 127.0.0.1 with a fresh data dir; the broker can be
restarted on the same data dir and port, or SIGKILLed. At the end of the test the broker is sent
SIGTERM and must exit 0 within a few seconds: a clean shutdown is part of the contract.
"""

import gc
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / "target" / "debug" / "sluice-server"
LISTENING = re.compile(r"sluice-server listening on (\S+):(\d+)")
# printed before LISTENING, one per listener: name, security protocol, host, port
LISTENER = re.compile(r"sluice-server listener (\S+) (\S+) on (\S+):(\d+)")
# printed when the HTTP listener (metrics, health, console) is on
HTTP = re.compile(r"sluice-server http on (\S+):(\d+)")
BACKTRACE_FRAME = re.compile(r"^\s+(\d+: |at )")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0  # the broker waits up to 5 s for open connections before closing its logs


class Broker:
    """One sluice-server process (and its successors after restarts) on one data dir."""

    def __init__(self, binary, data_dir, log_dir, cores=2, overrides=(), advertised=None):
        self.binary = str(binary)
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.cores = cores
        self.overrides = list(overrides)  # "key=value" strings, passed as --override key=value
        self.advertised = advertised  # "HOST:PORT" given to clients in Metadata, or None
        self.port = 0  # 0 until the first start picks one; restarts reuse it
        self.http_port = 0  # the HTTP listener's port, picked like `port`
        self.listeners = {}  # listener name -> (host, port) bound at the last start
        self.proc = None
        self.ended = False  # the last run was ended by stop() or kill(), not on its own
        self.starts = 0
        self.stderr_path = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    @property
    def http(self):
        """Base URL of the broker's HTTP listener (metrics, health, console)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def survives(self, grace=0.5):
        """True if the broker is still running `grace` seconds from now."""
        try:
            self.proc.wait(grace)
            return False
        except subprocess.TimeoutExpired:
            return True

    def start(self):
        """Starts the broker and returns once it accepts connections."""
        assert not self.running, "broker already running"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self._spawn(deadline)
                return self
            except PortBusy:
                # a restart on the same port can race with the old sockets going away
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _spawn(self, deadline):
        self.starts += 1
        self.ended = False
        out_path = self.log_dir / f"server-{self.starts}.out"
        self.stderr_path = self.log_dir / f"server-{self.starts}.err"
        env = dict(os.environ, NO_COLOR="1", RUST_BACKTRACE="1")
        env.setdefault("RUST_LOG", "info")
        with open(out_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--listen", f"127.0.0.1:{self.port}",
                    "--data-dir", str(self.data_dir),
                    "--cores", str(self.cores),
                    # before the test's overrides, which may turn it off
                    "--override", f"sluice.http.listen=127.0.0.1:{self.http_port}",
                    *[a for kv in self.overrides for a in ("--override", kv)],
                    *(["--advertised", self.advertised] if self.advertised else []),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
            )
        while True:
            out = out_path.read_text(errors="replace")
            match = LISTENING.search(out)
            if match:
                self.port = int(match.group(2))
                http = HTTP.search(out)
                if http:
                    self.http_port = int(http.group(2))
                self.listeners = {
                    m.group(1): (m.group(3), int(m.group(4))) for m in LISTENER.finditer(out)
                }
                break
            if self.proc.poll() is not None:
                log = self.stderr_path.read_text(errors="replace")
                if "Address already in use" in log:
                    raise PortBusy(log)
                raise RuntimeError(f"sluice-server exited with {self.proc.returncode}:\n{log}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"sluice-server did not print its listening line within {START_TIMEOUT}s:\n"
                    + self.stderr_path.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.02)
        wait_for_port("127.0.0.1", self.port, deadline)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM; returns the exit code (None if it had to be killed after `timeout`)."""
        if not self.running:
            return self.proc.returncode if self.proc else 0
        self.ended = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        """SIGKILL: a crash of the process, no chance to close anything."""
        if self.running:
            self.proc.kill()
            self.proc.wait()
            self.ended = True

    def restart(self):
        """Clean stop (checked) and start on the same data dir and port."""
        code = self.stop()
        assert code == 0, f"sluice-server did not stop cleanly (exit {code})\n{self.log_tail()}"
        return self.start()

    def log_tail(self, lines=60):
        """The end of the current run's stderr, without backtrace frames."""
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        text = self.stderr_path.read_text(errors="replace").splitlines()
        text = [line for line in text if not BACKTRACE_FRAME.match(line)]
        return "\n".join(text[-lines:])

    def log_text(self):
        """The stderr of every run so far, in order."""
        return "\n".join(
            (self.log_dir / f"server-{i}.err").read_text(errors="replace")
            for i in range(1, self.starts + 1)
            if (self.log_dir / f"server-{i}.err").exists()
        )


class PortBusy(Exception):
    pass


def wait_for_port(host, port, deadline):
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def server_binary():
    path = Path(os.environ.get("SLUICE_SERVER_BIN", DEFAULT_BIN))
    if not path.is_file():
        pytest.exit(
            f"sluice-server binary not found at {path}: run `cargo build -p sluice-server` "
            "or set SLUICE_SERVER_BIN",
            returncode=2,
        )
    return path


@pytest.fixture
def broker(request, tmp_path):
    """A running broker; stopped with SIGTERM at the end, which must exit 0."""
    logs = tmp_path / "logs"
    logs.mkdir()
    b = Broker(server_binary(), tmp_path / "data", logs)
    b.start()
    yield b
    # clients caught in reference cycles (a test's frame holding an exception) still hold
    # connections; free them so that the broker does not wait for them on shutdown
    gc.collect()
    if b.running:
        code = b.stop()
        assert code == 0, (
            f"sluice-server did not exit cleanly on SIGTERM (exit {code})\n{b.log_tail()}"
        )
    elif not b.ended and not getattr(request.node, "failed_call", False):
        pytest.fail(f"sluice-server died during the test (exit {b.proc.returncode})")


@pytest.fixture
def broker_factory(request, tmp_path):
    """Builds brokers with extra settings: make(overrides=["key=value", ...],
    advertised="HOST:PORT", start=True) returns a Broker (started unless start=False). Like
    `broker`, each one still running at the end is sent SIGTERM and must exit 0."""
    made = []
    request.node.factory_brokers = made

    def make(overrides=(), advertised=None, cores=2, start=True):
        n = len(made)
        logs = tmp_path / f"logs-{n}"
        logs.mkdir()
        b = Broker(
            server_binary(), tmp_path / f"data-{n}", logs, cores,
            overrides=overrides, advertised=advertised,
        )
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    gc.collect()
    for b in made:
        if b.running:
            code = b.stop()
            assert code == 0, (
                f"sluice-server did not exit cleanly on SIGTERM (exit {code})\n{b.log_tail()}"
            )
        elif b.proc is not None and not b.ended and not getattr(
            request.node, "failed_call", False
        ):
            pytest.fail(f"sluice-server died during the test (exit {b.proc.returncode})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the broker's log to the report of a failed test."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.failed_call = True
    b = getattr(item, "funcargs", {}).get("broker")
    if report.failed and isinstance(b, Broker):
        report.sections.append(("sluice-server log (tail)", b.log_tail()))
    if report.failed:
        for i, fb in enumerate(getattr(item, "factory_brokers", ())):
            report.sections.append((f"sluice-server {i} log (tail)", fb.log_tail()))
