#!/usr/bin/env python3
"""relay.py -- a delaying TCP relay for benchmarks and end-to-end tests.

Listens on 127.0.0.1 (a free port unless --listen says otherwise) and
forwards every connection to --target, holding the bytes back on the way:

  --up-delay-ms MIN:MAX    client -> server: each request's bytes are held a
                           uniform random MIN..MAX ms before they go on. In
                           front of the simulator this delays the *arrival*
                           the simulator counts, and the client cannot see it
                           (its bytes left its socket at once).
  --down-delay-ms MIN:MAX  server -> client: each answer is held likewise; for
                           the client this is the same as the server taking
                           that much longer to process the call (the arrival
                           was already counted when the request got there).

A "request" (or "answer") is a run of chunks: a chunk that comes while an
earlier one of the same direction is still held joins it (same release time);
a chunk after an idle direction draws a new delay. Bytes stay in order on each
connection. Delays are drawn from one seeded generator (--seed).

When ready it prints exactly one line to stdout, "relay listening on
127.0.0.1:PORT", and flushes it. SIGTERM or SIGINT stops it at once (exit 0);
it also stops by itself after --max-seconds, and refuses connections past
--max-connections at a time. Python 3 standard library only.
"""
import argparse
import asyncio
import random
import signal
import sys

CHUNK_BYTES = 65536


def delay_range(text):
    lo, sep, hi = text.partition(":")
    try:
        lo_ms = float(lo)
        hi_ms = float(hi) if sep else lo_ms
    except ValueError:
        raise argparse.ArgumentTypeError("want MIN:MAX in ms, got %r" % text) from None
    if lo_ms < 0 or hi_ms < lo_ms or hi_ms > 60000:
        raise argparse.ArgumentTypeError("want 0 <= MIN <= MAX <= 60000, got %r" % text)
    return lo_ms / 1000.0, hi_ms / 1000.0


def host_port(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError("want HOST:PORT, got %r" % text)
    return host or "127.0.0.1", int(port)


class Relay:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.connections = 0
        self.tasks = set()

    def draw(self, limits):
        lo, hi = limits
        return lo if hi <= lo else self.rng.uniform(lo, hi)

    async def pump(self, reader, writer, limits):
        """Copy reader to writer, each request held per limits, in order."""
        loop = asyncio.get_running_loop()
        held = asyncio.Queue()
        last_release = [0.0]

        async def release():
            while True:
                item = await held.get()
                if item is None:
                    break
                at, data = item
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        sender = asyncio.ensure_future(release())
        try:
            try:
                while True:
                    data = await reader.read(CHUNK_BYTES)
                    if not data:
                        break
                    now = loop.time()
                    # A chunk of a request still held joins it; else a new delay.
                    at = last_release[0] if last_release[0] > now else now + self.draw(limits)
                    last_release[0] = at
                    held.put_nowait((at, data))
            except (ConnectionError, OSError):
                pass
            held.put_nowait(None)
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            if not sender.done():
                sender.cancel()

    async def serve(self, client_reader, client_writer):
        if self.connections >= self.args.max_connections:
            client_writer.close()
            return
        self.connections += 1
        task = asyncio.current_task()
        self.tasks.add(task)
        server_writer = None
        try:
            host, port = self.args.target
            server_reader, server_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=10)
            await asyncio.gather(
                self.pump(client_reader, server_writer, self.args.up_delay_ms),
                self.pump(server_reader, client_writer, self.args.down_delay_ms))
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
        finally:
            self.connections -= 1
            self.tasks.discard(task)
            for w in (client_writer, server_writer):
                if w is not None:
                    w.close()

    async def run(self):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        host, port = self.args.listen
        server = await asyncio.start_server(self.serve, host, port, reuse_address=True)
        bound = server.sockets[0].getsockname()
        print("relay listening on %s:%d" % (bound[0], bound[1]), flush=True)
        try:
            await asyncio.wait_for(stop.wait(), timeout=self.args.max_seconds)
        except asyncio.TimeoutError:
            print("relay: --max-seconds reached, stopping", file=sys.stderr)
        server.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def main():
    p = argparse.ArgumentParser(description="delaying TCP relay (see the module comment)")
    p.add_argument("--listen", type=host_port, default=("127.0.0.1", 0), metavar="HOST:PORT")
    p.add_argument("--target", type=host_port, required=True, metavar="HOST:PORT")
    p.add_argument("--up-delay-ms", type=delay_range, default=(0.0, 0.0), metavar="MIN:MAX")
    p.add_argument("--down-delay-ms", type=delay_range, default=(0.0, 0.0), metavar="MIN:MAX")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=900.0)
    p.add_argument("--max-connections", type=int, default=512)
    args = p.parse_args()
    if args.listen[0] != "127.0.0.1" or args.target[0] != "127.0.0.1":
        p.error("loopback only: --listen and --target must be 127.0.0.1")
    asyncio.run(Relay(args).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
