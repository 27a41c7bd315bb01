#!/usr/bin/env python3
"""idle_clients.py HOST PORT CA PROTO STEPS...: open TLS connections to HOST:PORT in steps
(e.g. 1000 5000 10000), each making one request (HTTP/1.1 keep-alive, or HTTP/2 with a
hand-made preface, SETTINGS and one HEADERS frame) and then staying open and idle. After
each step it prints "ready N" and waits for a line on stdin before the next one; at EOF it
closes everything. Used by idle-memory.sh to read the servers' RSS at each step."""

import asyncio
import ssl
import sys

HOST, PORT, CA, PROTO = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
STEPS = [int(s) for s in sys.argv[5:]]


def h2_request() -> bytes:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    # HPACK: :method GET (2), :scheme https (7), :path / (4), :authority localhost
    # (literal with incremental indexing, name index 1).
    block = b"\x82\x87\x84\x41\x09localhost"
    headers = len(block).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big") + block
    return preface + settings + headers


async def read_frames_until_end(reader, writer):
    """Read HTTP/2 frames until stream 1 ends; acknowledge the server's SETTINGS."""
    while True:
        head = await reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        await reader.readexactly(length)
        if kind == 0x4 and not flags & 0x1:
            writer.write(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
        if stream == 1 and kind in (0x0, 0x1) and flags & 0x1:
            return
        if kind == 0x7:
            raise ConnectionError("GOAWAY")


async def one(ctx, conns, failures):
    try:
        reader, writer = await asyncio.open_connection(HOST, PORT, ssl=ctx, server_hostname="localhost")
        if PROTO == "h2":
            writer.write(h2_request())
            await read_frames_until_end(reader, writer)
        else:
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
        conns.append(writer)
    except Exception as e:  # noqa: BLE001 - counted and reported
        failures.append(repr(e))


async def main():
    ctx = ssl.create_default_context(cafile=CA)
    ctx.set_alpn_protocols(["h2"] if PROTO == "h2" else ["http/1.1"])
    conns, failures = [], []
    loop = asyncio.get_running_loop()
    for target in STEPS:
        while len(conns) + len(failures) < target:
            batch = min(200, target - len(conns) - len(failures))
            await asyncio.gather(*(one(ctx, conns, failures) for _ in range(batch)))
        print(f"ready {len(conns)} failed {len(failures)}" + (f" ({failures[0]})" if failures else ""), flush=True)
        if not await loop.run_in_executor(None, sys.stdin.readline):
            break
    for w in conns:
        w.close()


asyncio.run(main())
