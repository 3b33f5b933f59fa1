#!/usr/bin/env python3
"""First logins and restart storms (issue 30), chatrelay only: the classic stack has no `/new`.

  logins.py --bin CHATRELAY --config TOML --imap-port P --https-port P [-n 1000] [--out JSON]

Starts chatrelay itself (it must not be running on that config) so it can restart it, then:

  first_issued   N first logins (LOGIN, SELECT, IDLE; 32 in flight) with relay-issued
                 credentials fetched from POST /new beforehand (not timed)
  first_chosen   N first logins of new accounts with one user-chosen password (argon2id)
  storm_issued   after a restart (empty login cache): all N relay-issued accounts reconnect at
                 once (N in flight) and IDLE; the time until the last one idles
  storm_chosen   the same for the N user-chosen accounts

Each step is the Rust loadgen's `fanout` (LOADGEN, built by run.sh), with the server CPU it cost.
Timed, never asserted. Loopback only; the relay is stopped on exit.
"""
import argparse
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (server_cpu_s, run_step, print_cpu)


def wait_port(port, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"port {port} did not open")


class Relay:
    def __init__(self, args):
        self.args, self.proc = args, None

    def start(self):
        log = open(self.args.log, "a")
        self.proc = subprocess.Popen([self.args.bin, "serve", "--config", self.args.config], stdout=log,
                                     stderr=log, env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn")))
        wait_port(self.args.imap_port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def fetch_credentials(port, n, path):
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with open(path, "w") as f:
        for _ in range(n):
            req = urllib.request.Request(f"https://127.0.0.1:{port}/new", method="POST")
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                j = json.loads(r.read())
            f.write(f"{j['email']} {j['password']}\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--imap-port", type=int, required=True)
    p.add_argument("--https-port", type=int, required=True)
    p.add_argument("-n", type=int, default=int(os.environ.get("LOGINS_N", "1000")))
    p.add_argument("--out", help="JSON results (merged into an existing compare.py file as steps)")
    p.add_argument("--log", default=os.devnull)
    a = p.parse_args()
    loadgen = os.environ.get("LOADGEN")
    if not loadgen:
        raise SystemExit("LOADGEN (the bench/loadgen binary) is needed")
    results = {"name": "chatrelay", "steps": {}}
    if a.out and os.path.exists(a.out):
        with open(a.out) as f:
            results = json.load(f)
    relay = Relay(a)
    work = tempfile.mkdtemp(prefix="chatrelay-logins.")
    creds = os.path.join(work, "credentials")

    def fanout(key, concurrency, extra):
        argv = [loadgen, "--imap-port", str(a.imap_port), "--server-pid", str(relay.proc.pid), "--json-out", "@JSON@",
                "fanout", "-c", str(a.n), "--connect-concurrency", str(concurrency), "-n", "0", "--settle", "0"]
        step = compare.run_step(f"chatrelay: {key}", argv + extra, [relay.proc.pid])
        results["steps"][key] = step
        r = step.get("result", {})
        print(f"    {key}: {r.get('connections')} idling ({r.get('failed')} failed) after {r.get('open_s', 0):.2f} s",
              flush=True)

    try:
        relay.start()
        t0 = time.perf_counter()
        fetch_credentials(a.https_port, a.n, creds)
        print(f"# {a.n} credentials from POST /new in {time.perf_counter() - t0:.1f} s (not timed below)", flush=True)
        chosen = ["--idle-fmt", "uc{n:07d}@{domain}", "--idle-base", "1"]
        fanout("first_issued", 32, ["--credentials", creds])
        fanout("first_chosen", 32, chosen)
        for key, extra in (("storm_issued", ["--credentials", creds]), ("storm_chosen", chosen)):
            relay.stop()
            relay.start()
            fanout(key, a.n, extra)
    finally:
        relay.stop()
        for f in os.listdir(work):
            os.unlink(os.path.join(work, f))
        os.rmdir(work)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
