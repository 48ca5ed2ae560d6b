"""CPU the broker spends per /metrics scrape: starts target/release/sluice-server with
PARTITIONS partitions of data (and a consumer group), scrapes N times over one keep-alive
connection, and divides the broker's CPU time (utime+stime from /proc) by N. At one scrape a
second, this per-scrape cost is the share of a core the scraping takes.

    python3 bench/scripts/scrape_cost.py [PARTITIONS=16] [N=2000]
"""

import http.client
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER = os.path.join(REPO, "target/release/sluice-server")
CLI = os.path.join(REPO, "target/release/sluice")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    partitions = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    data = tempfile.mkdtemp(prefix="scrape-cost-", dir="/var/tmp")
    out = open(os.path.join(data, "out"), "w+")
    proc = subprocess.Popen(
        [SERVER, "--listen", "127.0.0.1:0", "--data-dir", os.path.join(data, "d"),
         "--cores", "2", "--override", "sluice.http.listen=127.0.0.1:0"],
        stdout=out, stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            text = open(out.name).read()
            if "listening on" in text:
                break
            time.sleep(0.05)
        kafka = re.search(r"listening on (\S+)", text).group(1)
        http_addr = re.search(r"http on (\S+):(\d+)", text)
        host, port = http_addr.group(1), int(http_addr.group(2))
        subprocess.run([CLI, "-b", kafka, "topic", "create", "t", "-p", str(partitions)],
                       check=True, capture_output=True)
        subprocess.run([CLI, "-b", kafka, "produce", "t"], input=b"x\n" * 10000, check=True,
                       capture_output=True)
        conn = http.client.HTTPConnection(host, port)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read()
        before = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        for _ in range(n):
            conn.request("GET", "/metrics")
            r = conn.getresponse()
            r.read()
            assert r.status == 200
        wall = time.monotonic() - t0
        cpu = cpu_seconds(proc.pid) - before
        print(f"{partitions} partitions, {len(body)} bytes per scrape, {n} scrapes: "
              f"broker CPU {cpu / n * 1000:.3f} ms per scrape, wall {wall / n * 1000:.3f} ms; "
              f"at 1 scrape/s that is {cpu / n * 100:.3f} % of one core")
    finally:
        proc.terminate()
        proc.wait(10)
        subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    main()
