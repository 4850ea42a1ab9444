#!/usr/bin/env python3
"""A latency floor for this machine, measured beside `whispr bench` in the same sitting.

A plain TCP echo on loopback at a fixed rate: the server pinned to core 0, the client to
core 1 (the pinned-core method of BENCHMARKS.md), each message 64 bytes with TCP_NODELAY,
and optionally SPIN_US microseconds of fixed work per message in the server to stand in
for the relay's work (signature check, store, frames): a loop count calibrated once at
start, so a CPU that slows down makes the work take longer, as it would the relay's. It
has none of the relay's code, so a tail it shows too belongs to the machine (scheduler,
hypervisor), not to the relay.

    benches/echo_probe.py RATE SECONDS CONNECTIONS [SPIN_US]
    benches/echo_probe.py 2000 10 100 100
"""
import os
import selectors
import socket
import struct
import sys
import time

RATE, SECONDS, CONNECTIONS = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
SPIN = (float(sys.argv[4]) if len(sys.argv) > 4 else 0.0) / 1e6
FRAME = 64


def work(n):
    x = 0
    for i in range(n):
        x += i * i
    return x


def calibrate():
    """Loop iterations per second of `work`, the best of a few short runs."""
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        work(200_000)
        best = max(best, 200_000 / (time.perf_counter() - t))
    return best


def serve(listener):
    per_message = int(SPIN * calibrate())
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(key.fileobj)
                continue
            if per_message:
                work(per_message * (len(data) // FRAME))
            key.fileobj.sendall(data)


listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1024)
port = listener.getsockname()[1]
server = os.fork()
if server == 0:
    os.sched_setaffinity(0, {0})
    serve(listener)
    os._exit(0)
os.sched_setaffinity(0, {1})
time.sleep(1.5)  # the server calibrates first
socks = []
for _ in range(CONNECTIONS):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    socks.append(s)
sel = selectors.DefaultSelector()
for s in socks:
    sel.register(s, selectors.EVENT_READ)
total = int(RATE * SECONDS)
rtts, sent, start = [], 0, time.monotonic()
try:
    while len(rtts) < total:
        now = time.monotonic()
        # Open loop: every message due by now leaves now, stamped with its send time.
        while sent < total and start + sent / RATE <= now:
            socks[sent % CONNECTIONS].send(struct.pack("d", time.monotonic()) + b"x" * (FRAME - 8))
            sent += 1
        due = start + sent / RATE if sent < total else now + 0.01
        for key, _ in sel.select(max(0.0, due - time.monotonic())):
            data = key.fileobj.recv(65536)
            t = time.monotonic()
            for k in range(0, len(data) - FRAME + 1, FRAME):
                rtts.append(t - struct.unpack("d", data[k:k + 8])[0])
finally:
    os.kill(server, 9)
rtts.sort()


def q(p):
    return rtts[min(len(rtts) - 1, int(p * len(rtts)))] * 1000


print(f"echo {len(rtts)} at {RATE:.0f}/s over {CONNECTIONS} connections, {SPIN * 1e6:.0f} µs "
      f"per message: p50 {q(.5):.2f} p90 {q(.9):.2f} p99 {q(.99):.2f} p99.9 {q(.999):.2f} "
      f"max {rtts[-1] * 1000:.2f} ms")
