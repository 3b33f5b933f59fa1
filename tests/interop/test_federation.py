"""Two chatrelay instances federate: Delta Chat users on different relays chat end to end.

Relay A is `_a.test` on 127.0.0.2 and relay B is `_b.test` on 127.0.0.3 (domains starting with
`_` accept self-signed certificates, as in Delta Chat). A DNS server on loopback serves their MX,
A and DKIM TXT records; both relays listen on the same port numbers so `delivery.smtp_port` and
`delivery.https_port` reach the other one.
"""

import threading
import time

import pytest
from dnslib import A, MX, QTYPE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from conftest import Factory, Relay, free_port


class Zone(BaseResolver):
    def __init__(self):
        self.records = {}

    def add(self, name, rtype, rdata):
        self.records.setdefault((name.rstrip(".").lower() + ".", rtype), []).append(rdata)

    def resolve(self, request, handler):
        reply = request.reply()
        q = request.q
        name = str(q.qname).lower()
        for rdata in self.records.get((name, QTYPE[q.qtype]), []):
            reply.add_answer(RR(q.qname, q.qtype, rdata=rdata, ttl=60))
        if not reply.rr and not any(n == name for (n, _) in self.records):
            reply.header.rcode = 3  # NXDOMAIN
        return reply


@pytest.fixture
def federation(tmp_path):
    zone = Zone()
    dns_port = free_port()
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    server = DNSServer(zone, port=dns_port, address="127.0.0.1", logger=quiet)
    server.start_thread()
    ports = {n: free_port() for n in Relay.NAMES}
    extra = (
        '[push]\nnotify_url = ""\n'
        f'[delivery]\nresolver = "127.0.0.1:{dns_port}"\n'
        f'smtp_port = {ports["smtp"]}\nhttps_port = {ports["https"]}\n'
    )
    a = Relay(tmp_path / "a", domain="_a.test", ip="127.0.0.2", extra=extra, ports=ports)
    b = Relay(tmp_path / "b", domain="_b.test", ip="127.0.0.3", extra=extra, ports=ports)
    for relay in (a, b):
        zone.add(relay.domain, "MX", MX(relay.domain + ".", 10))
        zone.add(relay.domain, "A", A(relay.ip))
        value = relay.dkim_txt().encode()
        zone.add(f"dkim._domainkey.{relay.domain}", "TXT", TXT([value[i : i + 255] for i in range(0, len(value), 255)]))
    yield a, b
    a.stop()
    b.stop()
    server.stop()


def test_federation_between_two_relays(dc, federation):
    from test_chat import wait_msg

    a, b = federation
    ac_a = Factory(dc, a).account()
    ac_b = Factory(dc, b).account()
    assert ac_a.get_config("configured_addr").endswith("@_a.test")
    assert ac_b.get_config("configured_addr").endswith("@_b.test")
    t0 = time.time()
    ac_a.create_chat(ac_b).send_text("across relays")
    msg = wait_msg(ac_b, timeout=90).get_snapshot()
    print(f"\nfederated A->B latency: {(time.time() - t0) * 1000:.0f} ms")
    assert msg.text == "across relays" and msg.show_padlock
    ac_b.create_chat(ac_a).send_text("and back")
    back = wait_msg(ac_a, timeout=90).get_snapshot()
    assert back.text == "and back" and back.show_padlock
