#!/usr/bin/env python3
"""Redis CPU of the store's own scripts per stored, delivered and acknowledged message,
on any Redis-compatible server, without a relay (BENCHMARKS.md, sixth session).

    benches/script_cost.py PORT [ROUNDS] [INBOXES]      (defaults: 200 rounds, 64 inboxes)

PORT is a running server on 127.0.0.1 (redis-server, valkey-server, a Redis built
elsewhere) whose database may be written. The scripts are read from
src/store/redis/scripts.rs, so the figures follow the code. Each round is one INSERT call
storing one 700-byte message into each inbox, then one READS call that acknowledges each
inbox's previous message and reads the new one: what the relay's group commit sends at a
batch of INBOXES (1 is an idle relay's unbatched call). Prints, per message, the scripts'
time (INFO commandstats, EVALSHA) and the server's used_cpu (which adds its I/O)."""
import os
import re
import socket
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = open(os.path.join(ROOT, "src/store/redis/scripts.rs")).read()
RUN = "abcdef"  # the process run id the scripts are built for (any hex)


def constant(name):
    return re.search(r"const " + name + r': &str = r#"(.*?)"#;', SOURCE, re.S).group(1)


def script(flags, name):
    # As scripts.rs's Script::new builds it.
    return f"{flags}\nlocal run = '{RUN}'\n{constant('PRELUDE')}{constant(name)}"


class Resp:
    """Just enough RESP2 for commands and their replies."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self.reply()

    def line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(1 << 20)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(1 << 20)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")


def parts(reply):
    """A batched script's reply: each operation's part, prefixed by its length."""
    out, i = [], 0
    while i < len(reply):
        n = int(reply[i])
        out.append(reply[i + 1:i + 1 + n])
        i += 1 + n
    return out


def main():
    port = int(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    inboxes = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    r = Resp(port)
    insert_sha = r.call("SCRIPT", "LOAD", script("#!lua", "INSERT"))
    reads_sha = r.call("SCRIPT", "LOAD", script("#!lua flags=allow-oom", "READS"))
    keys = []
    for i in range(inboxes):
        stem = "whispr:{%064x}:" % (0xbe0000 + i)
        keys += [stem + "meta", stem + "queue", stem + "ids"]
    week, day, payload = 604_800_000, 86_400_000, "x" * 700

    def insert():
        now = int(time.time() * 1000)
        args = []
        for i in range(inboxes):
            args += [f"e{i:x}", week, os.urandom(16).hex(), now + day, now, now + day,
                     1_000_000, payload, ""]
        got = parts(r.call("EVALSHA", insert_sha, len(keys), *keys, "", "1", "", *args))
        assert all(p[0] == "stored" for p in got), got[:2]
        return got

    def read(cursors):
        now = int(time.time() * 1000)
        args = []
        for epoch, seq in cursors:
            args += [f"e{len(args):x}", week, "f", now, epoch, seq, 100, epoch, seq]
        got = parts(r.call("EVALSHA", reads_sha, len(keys), *keys, "", "1", "", *args))
        # {epoch, head, lost_through, acked, expired, lost, one entry}: the new message.
        assert all(len(p) == 7 for p in got), got[:1]
        return [(p[0], p[6].split(" ", 1)[0]) for p in got]

    def cpu():
        info = r.call("INFO", "cpu")
        return sum(float(l.split(":")[1]) for l in info.splitlines()
                   if l.startswith(("used_cpu_sys:", "used_cpu_user:")))

    cursors = [(p[1], str(int(p[2]) - 1)) for p in insert()]
    r.call("CONFIG", "RESETSTAT")
    cpu_before, started = cpu(), time.time()
    for _ in range(rounds):
        cursors = read(cursors)
        insert()
    cpu_used, wall = cpu() - cpu_before, time.time() - started
    stats = r.call("INFO", "commandstats")
    calls, usec = map(int, re.search(r"cmdstat_evalsha:calls=(\d+),usec=(\d+)", stats).groups())
    # The last round's messages stay queued; each key is removed with its inbox's last ack.
    r.call("DEL", *keys)
    server = r.call("INFO", "server")
    version = (re.search(r"valkey_version:\S+", server) or re.search(r"redis_version:\S+", server)).group(0)
    n = rounds * inboxes
    print(f"{version}, {inboxes} per call: {n} messages, scripts {usec / n:.1f} µs/msg "
          f"({calls} calls), used_cpu {1e6 * cpu_used / n:.1f} µs/msg, wall {1e6 * wall / n:.1f} µs/msg")


if __name__ == "__main__":
    main()
