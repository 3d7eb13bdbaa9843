#!/usr/bin/env python
"""A rate-limited loopback TCP proxy: a link of N Mbit/s in front of the local S3 endpoint (moto).

Used by `pg_backup_bench.py --upload-mbit N` so that both the reference upload and pg_backup see the same link,
as a real S3 endpoint would be, instead of loopback speed. One token bucket per direction, shared by every
connection (the link is full duplex; parallel part uploads share its bandwidth as they would share an uplink).

    python bench/s3_rate_proxy.py --target 127.0.0.1:5000 --mbit 400   # prints "PORT <n>" once listening
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

CHUNK = 64 * 1024


class TokenBucket(object):
    """Bytes per second with a small burst; callers wait their turn in order (the lock is held while waiting)."""

    def __init__(self, rate, burst):
        self.rate = float(rate)
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, count):
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= count:
                    self.tokens -= count
                    return
                await asyncio.sleep((count - self.tokens) / self.rate)


async def pipe(reader, writer, bucket):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            await bucket.take(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except RuntimeError:
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--target', required=True, help='host:port to forward to')
    parser.add_argument('--mbit', type=float, required=True, help='link speed, Mbit/s, each direction')
    parser.add_argument('--listen', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0)
    opts = parser.parse_args()
    host, dummy, port = opts.target.rpartition(':')
    rate = opts.mbit * 1e6 / 8

    async def serve():
        up = TokenBucket(rate, 4 * CHUNK)
        down = TokenBucket(rate, 4 * CHUNK)

        async def handle(client_reader, client_writer):
            try:
                server_reader, server_writer = await asyncio.open_connection(host, int(port))
            except OSError:
                client_writer.close()
                return
            await asyncio.gather(pipe(client_reader, server_writer, up), pipe(server_reader, client_writer, down))

        server = await asyncio.start_server(handle, opts.listen, opts.port)
        print('PORT %d' % server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
