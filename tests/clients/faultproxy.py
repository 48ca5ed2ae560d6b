"""A fault-injecting TCP proxy for the cluster fault tests: one proxy per broker, listening on a
127.0.0.1 port that the broker advertises (advertised.listeners), so that clients and the
followers fetching from that broker both go through it. The metadata quorum's links
(controller.quorum.voters) do not: they go straight to the brokers.

Each proxy runs its own asyncio loop on a daemon thread; the test thread controls it:

- `cut()`: resets every open connection and refuses (accepts, then resets) new ones until
  `heal()`; peers see connection errors at once.
- `blackhole()`: stops forwarding in both directions (open connections stall; new ones are
  accepted but never reach the broker) until `heal()`, like a partitioned network whose TCP
  connections have not timed out yet: bytes held back are delivered after the heal, none is
  lost or reordered.
- `heal()`: back to forwarding.
- `stop()`: closes the listener and every connection and ends the thread.
"""

import asyncio
import socket
import threading

PASS, CUT, BLACKHOLE = "pass", "cut", "blackhole"


class FaultProxy:
    def __init__(self, name, target_port, host="127.0.0.1"):
        """`target_port`: a callable returning the broker's current port (0 while unknown:
        connections are then refused)."""
        self.name = name
        self.host = host
        self.target_port = target_port
        self.mode = PASS
        self.accepted = 0
        self._conns = set()  # (client writer, upstream writer or None)
        self._loop = asyncio.new_event_loop()
        self._flowing = None  # asyncio.Event, set while not blackholed
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._server = None
        self._thread = threading.Thread(target=self._run, name=f"faultproxy-{name}", daemon=True)
        ready = threading.Event()
        self._ready = ready
        self._thread.start()
        ready.wait(10)
        assert self._server is not None, f"proxy {name} did not start"

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    # -- control (test thread) --

    def _call(self, fn):
        fut = asyncio.run_coroutine_threadsafe(self._in_loop(fn), self._loop)
        return fut.result(10)

    @staticmethod
    async def _in_loop(fn):
        return fn()

    def cut(self):
        self._call(self._cut)

    def blackhole(self):
        self._call(self._blackhole)

    def heal(self):
        self._call(self._heal)

    def stop(self):
        if not self._thread.is_alive():
            return
        try:
            self._call(self._shutdown)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # -- loop thread --

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()

        async def serve():
            self._server = await asyncio.start_server(self._handle, sock=self._sock)

        self._loop.run_until_complete(serve())
        self._ready.set()
        self._loop.run_forever()
        # stopped: close whatever is left
        for c, u in list(self._conns):
            _abort(c)
            _abort(u)
        tasks = asyncio.all_tasks(self._loop)
        if tasks:  # the aborted connections' handlers end on their own
            self._loop.run_until_complete(asyncio.wait(tasks, timeout=2))
        for t in tasks:
            t.cancel()
        self._loop.close()

    def _cut(self):
        self.mode = CUT
        self._flowing.set()  # stalled pumps wake up and see the connection gone
        for c, u in list(self._conns):
            _abort(c)
            _abort(u)
        self._conns.clear()

    def _blackhole(self):
        self.mode = BLACKHOLE
        self._flowing.clear()

    def _heal(self):
        self.mode = PASS
        self._flowing.set()

    def _shutdown(self):
        self._server.close()
        self._cut()

    async def _handle(self, reader, writer):
        self.accepted += 1
        if self.mode == CUT:
            _abort(writer)
            return
        entry = [writer, None]
        key = None
        try:
            await self._flowing.wait()
            port = self.target_port()
            if self.mode == CUT or not port:
                _abort(writer)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(self.host, port)
            except OSError:
                _abort(writer)
                return
            entry[1] = up_writer
            key = (writer, up_writer)
            self._conns.add(key)
            await asyncio.gather(
                self._pump(reader, up_writer, key), self._pump(up_reader, writer, key)
            )
        except Exception:  # noqa: BLE001 - any failure ends this connection only
            pass
        finally:
            if key is not None:
                self._conns.discard(key)
            _abort(entry[0])
            _abort(entry[1])

    async def _pump(self, src, dst, key):
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # blackholed: hold the bytes (and stop reading)
                if key not in self._conns:
                    break
                dst.write(data)
                await dst.drain()
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            # one direction ended: end the connection as a whole
            for w in key:
                _abort(w)


def _abort(writer):
    if writer is None:
        return
    try:
        writer.transport.abort()
    except Exception:  # noqa: BLE001 - already closed
        pass
