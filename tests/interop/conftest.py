"""Fixtures: a real chatrelay on loopback and real Delta Chat clients (deltachat-rpc-server).

The relay runs with self-signed TLS on free ports; clients get explicit server settings and
accept invalid certificates (they trust only public roots otherwise). Nothing leaves loopback.
"""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from deltachat_rpc_client import DeltaChat, Rpc

BIN = os.environ.get("RELAY_BIN") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/chatrelay-target")) / "debug/chatrelay"
)


_next_port = [20_000 + (os.getpid() % 600) * 20]


def free_port():
    """A port below Linux's ephemeral range (32768+), so no client connection of this machine can
    hold it when the relay binds; never the same one twice in this process; probed first."""
    while True:
        port = _next_port[0]
        _next_port[0] = 20_000 if port >= 31_999 else port + 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


class Relay:
    NAMES = ["smtp", "submission", "submissions", "imap", "imaps", "http", "https", "metrics"]

    def __init__(self, tmp: Path, domain="chat.test", ip="127.0.0.1", extra="", ports=None):
        self.domain, self.ip, self.tmp = domain, ip, tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.ports = ports or {n: free_port() for n in self.NAMES}
        listen = "\n".join(f'{n} = "{ip}:{p}"' for n, p in self.ports.items())
        self.config = tmp / "chatrelay.toml"
        self.config.write_text(
            f'mail_domain = "{domain}"\ndata_dir = "{tmp / "data"}"\n'
            # A busy test machine must not close the registration gates (ACC-16).
            'max_load_1m = 100000.0\nmin_available_memory = "1M"\nmin_free_disk_space = "1M"\n'
            # Accounts made by first login share the /new bucket per client (issue 26).
            'limits.new_accounts_burst = 100000\n'
            f'{extra}\n'
            f'[listen]\n{listen}\n[tls]\nmode = "self-signed"\n'
        )
        self.log = open(tmp / "relay.log", "wb")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env={**os.environ, "RUST_LOG": "info"},
        )
        deadline = time.time() + 20
        for port in self.ports.values():
            while True:
                try:
                    socket.create_connection((ip, port), timeout=0.2).close()
                    break
                except OSError:
                    assert self.proc.poll() is None, "chatrelay exited at start"
                    assert time.time() < deadline, f"port {port} did not open"
                    time.sleep(0.02)

    def new_credentials(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(f"https://{self.ip}:{self.ports['https']}/new", method="POST", data=b"")
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            data = json.loads(r.read())
        return data["email"], data["password"]

    def transport(self, addr, password):
        """Explicit server settings for add_or_update_transport."""
        return {
            "addr": addr,
            "password": password,
            "imapServer": self.ip,
            "imapPort": self.ports["imaps"],
            "imapSecurity": "ssl",
            "smtpServer": self.ip,
            "smtpPort": self.ports["submissions"],
            "smtpSecurity": "ssl",
            "certificateChecks": "acceptInvalidCertificates",
        }

    def dkim_txt(self):
        """The DKIM TXT value this relay wants published, read from `chatrelay dns`."""
        out = subprocess.run(
            [BIN, "dns", "--config", str(self.config)], capture_output=True, text=True, timeout=60
        ).stdout
        for line in out.splitlines():
            if "._domainkey." in line and " TXT " in line and not line.startswith(";"):
                parts = line.split(" TXT ", 1)[1]
                return "".join(chunk for chunk in parts.split('"')[1::2])
        raise AssertionError("no DKIM record in `chatrelay dns` output:\n" + out)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


RELAY_EXTRA = '[push]\nnotify_url = "http://127.0.0.1:9/notify"\n[delivery]\nresolver = "127.0.0.1:9"\n'


def cluster_database():
    """Issue 27: with RELAYTEST_PG_URL set (tests/scaleout/run.sh), a fresh database on that
    PostgreSQL; the suite then runs on two relay nodes and clients alternate between them."""
    base = os.environ.get("RELAYTEST_PG_URL")
    if not base:
        return None
    name = "i_" + os.urandom(6).hex()
    subprocess.run(["psql", base, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def relay(tmp_path):
    # A notify_url makes the relay advertise XDELTAPUSH, so clients register device tokens; the
    # URL points at a closed local port (no proxy is needed for these tests).
    # The resolver points at a closed local port: no test ever sends a DNS query off the machine.
    url = cluster_database()
    if url is None:
        r = Relay(tmp_path / "relay", extra=RELAY_EXTRA)
        yield r
        r.stop()
        return
    extra = RELAY_EXTRA + f'[store]\nbackend = "postgres"\nurl = "{url}"\npool_size = 4\n'
    secret = os.urandom(32)
    nodes = []
    for i in range(2):
        data = tmp_path / f"node{i}" / "data"
        data.mkdir(parents=True)
        (data / "secret.key").write_bytes(secret)
        nodes.append(Relay(tmp_path / f"node{i}", extra=extra))
    r = nodes[0]
    r.nodes = nodes
    yield r
    for n in nodes:
        n.stop()


@pytest.fixture
def dc(tmp_path):
    rpc = Rpc(accounts_dir=str(tmp_path / "accounts"))
    with rpc:
        yield DeltaChat(rpc)


class Factory:
    def __init__(self, dc, relay):
        self.dc, self.relay = dc, relay

    def account(self, creds=None, device_token=None):
        ac = self.dc.add_account()
        if device_token:
            ac.set_config("device_token", device_token)
        # A bot accepts messages from unknown senders without a contact request.
        ac.set_config("bot", "1")
        # Never pick or add other relays on its own: everything stays on this loopback relay.
        ac.set_config("autorelay", "0")
        ac.set_config("displayname", "tester")
        addr, pw = creds or self.relay.new_credentials()
        # On a cluster (issue 27) each new account's client talks to the next node.
        nodes = getattr(self.relay, "nodes", [self.relay])
        self.made = getattr(self, "made", 0) + 1
        node = nodes[(self.made - 1) % len(nodes)]
        ac.add_or_update_transport(node.transport(addr, pw))
        assert ac.is_configured()
        ac.bring_online()
        return ac

    def accounts(self, n):
        return [self.account() for _ in range(n)]


@pytest.fixture
def acf(dc, relay):
    return Factory(dc, relay)
