#!/usr/bin/env python3
"""Issue 26 benchmark helper: hostile IMAP clients and a port-25 greeting probe (stdlib only).

  hostile.py greet  --host H --smtp PORT -n N            greeting latency p50/p99 (ms) as JSON
  hostile.py attack --host H --imap PORT --imaps PORT --user U --password P [--conns 8] [--ready FILE]

`attack` runs until killed: 8 connections by default, two each of the worst commands of issue 26
(LIST with 60 `*a` against a 250-octet name, SEARCH with 6,000 ranges over 500 messages, a
pre-login LITERAL+ flood, a COMPRESS DEFLATE stream of 128 MiB of zeros in one command); each
reconnects when the relay closes it. Loopback only; no timing here is asserted anywhere.
"""
import argparse
import json
import socket
import ssl
import sys
import threading
import time
import zlib

CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))] if s else 0.0


class Imap:
    def __init__(self, host, port, tls):
        s = socket.create_connection((host, port), timeout=120)
        self.s = CTX.wrap_socket(s, server_hostname="chat.test") if tls else s
        self.buf = b""
        self.line()

    def line(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError
            self.buf += d
        l, self.buf = self.buf.split(b"\n", 1)
        return l.rstrip(b"\r").decode("latin-1")

    def cmd(self, tag, text):
        self.s.sendall(f"{tag} {text}\r\n".encode())
        while True:
            l = self.line()
            if l.startswith(tag + " "):
                return l


def login(a, tls=True):
    c = Imap(a.host, a.imaps if tls else a.imap, tls)
    r = c.cmd("l", f'LOGIN "{a.user}" "{a.password}"')
    if " OK" not in r:
        raise RuntimeError(r)
    return c


def setup(a):
    c = login(a)
    c.cmd("c", "CREATE " + "a" * 250)
    c.cmd("s", "SELECT INBOX")
    parts = []
    for i in range(500):
        m = f"Subject: m{i}\r\n\r\nbody {i}\r\n"
        parts.append(f"p{i} APPEND INBOX {{{len(m)}+}}\r\n{m}\r\n".encode())
    c.s.sendall(b"".join(parts))
    for i in range(500):
        while not c.line().startswith(f"p{i} "):
            pass
    c.s.close()


def list_loop(a, stop):
    c = login(a)
    pat = "*a" * 60 + "b"
    i = 0
    while not stop.is_set():
        c.cmd(f"t{i}", f'LIST "" "{pat}"')
        i += 1


def search_loop(a, stop):
    c = login(a)
    c.cmd("s", "SELECT INBOX")
    sset = ",".join(["1:*"] * 6000)
    i = 0
    while not stop.is_set():
        c.cmd(f"t{i}", f"SEARCH {sset} UNSEEN")
        i += 1


def literal_flood(a, stop):
    lit = b"{65536+}\r\n" + b"z" * 65536 + b" "
    while not stop.is_set():
        try:
            c = Imap(a.host, a.imap, False)
            c.s.sendall(b'x ID ("k" ')
            for _ in range(768):
                c.s.sendall(lit)
        except (OSError, EOFError):
            pass
        time.sleep(0.01)


def compress_flood(a, stop):
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    lit = b"{65536+}\r\n" + b"\0" * 65536 + b" "
    wire = z.compress(b"m SETMETADATA INBOX (/private/comment ")
    for _ in range(2048):
        wire += z.compress(lit)
    wire += z.compress(b")\r\n") + z.flush(zlib.Z_SYNC_FLUSH)
    while not stop.is_set():
        try:
            c = login(a)
            c.cmd("z", "COMPRESS DEFLATE")
            c.s.sendall(wire)
            c.s.settimeout(10)
            while c.s.recv(65536):
                pass
        except (OSError, EOFError, RuntimeError):
            pass
        time.sleep(0.01)


def attack(a):
    setup(a)
    stop = threading.Event()
    kinds = [list_loop, search_loop, literal_flood, compress_flood]
    threads = []
    for i in range(a.conns):
        f = kinds[i % len(kinds)]

        def run(f=f):
            while not stop.is_set():
                try:
                    f(a, stop)
                except Exception as e:  # an attacker that fails reconnects
                    print(f"{f.__name__}: {e}", file=sys.stderr)
                    time.sleep(0.1)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
    time.sleep(1)
    if a.ready:
        open(a.ready, "w").write("ready\n")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        stop.set()


def greet(a):
    times = []
    for _ in range(a.n):
        t = time.monotonic()
        s = socket.create_connection((a.host, a.smtp), timeout=60)
        f = s.makefile("rb")
        line = f.readline()
        times.append((time.monotonic() - t) * 1000)
        if not line.startswith(b"220"):
            raise RuntimeError(line)
        s.sendall(b"QUIT\r\n")
        s.close()
        time.sleep(0.02)
    print(json.dumps({"n": len(times), "median": pct(times, 50), "p99": pct(times, 99), "max": max(times)}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["greet", "attack"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--smtp", type=int)
    p.add_argument("--imap", type=int)
    p.add_argument("--imaps", type=int)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--ready")
    p.add_argument("-n", type=int, default=200)
    a = p.parse_args()
    greet(a) if a.mode == "greet" else attack(a)


if __name__ == "__main__":
    main()
