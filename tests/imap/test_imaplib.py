"""Python imaplib against chatrelay's IMAP over real TLS (imap.md). Run via tests/imap/run.sh."""

import imaplib
import os
import random
import socket
import ssl
import string
import threading
import time
import unittest
import zlib

HOST = os.environ.get("IMAP_HOST", "127.0.0.1")
PORT = int(os.environ.get("IMAP_PORT", "143"))
SPORT = int(os.environ.get("IMAPS_PORT", "993"))
DOMAIN = os.environ.get("MAIL_DOMAIN", "chat.test")
PASSWORD = "correct-horse-battery-9"

imaplib.Commands.setdefault("GETMETADATA", ("AUTH", "SELECTED"))
imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))
imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))
imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def new_addr():
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(9)) + "@" + DOMAIN


def connect(addr=None):
    m = imaplib.IMAP4_SSL(HOST, SPORT, ssl_context=ctx(), timeout=15)
    if addr:
        typ, _ = m.login(addr, PASSWORD)
        assert typ == "OK"
    return m


def message(addr, body="hello"):
    return (
        f"From: <{addr}>\r\nTo: <{addr}>\r\nSubject: imaplib {random.random()}\r\n"
        f"Message-ID: <{random.random()}@{DOMAIN}>\r\nContent-Type: text/plain\r\n\r\n{body}\r\n"
    ).encode()


class CompressedIMAP(imaplib.IMAP4_SSL):
    """IMAP4_SSL that can switch to raw DEFLATE (RFC 4978) after COMPRESS DEFLATE."""

    def compress(self):
        typ, data = self._simple_command("COMPRESS", "DEFLATE")
        if typ != "OK":
            return typ, data
        self._c = zlib.compressobj(wbits=-15)
        self._d = zlib.decompressobj(wbits=-15)
        self._zbuf = b""
        return typ, data

    def send(self, data):
        if getattr(self, "_c", None):
            data = self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)
        return super().send(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise imaplib.IMAP4.abort("EOF")
        self._zbuf += self._d.decompress(chunk)

    def read(self, size):
        if not getattr(self, "_d", None):
            return super().read(size)
        while len(self._zbuf) < size:
            self._fill()
        out, self._zbuf = self._zbuf[:size], self._zbuf[size:]
        return out

    def readline(self):
        if not getattr(self, "_d", None):
            return super().readline()
        while b"\n" not in self._zbuf:
            self._fill()
        i = self._zbuf.index(b"\n") + 1
        out, self._zbuf = self._zbuf[:i], self._zbuf[i:]
        return out


class ImapTests(unittest.TestCase):
    def test_first_login_creates_and_capability(self):
        addr = new_addr()
        m = connect()
        self.assertIn("XCHATMAIL", m.capabilities)
        self.assertIn("AUTH=PLAIN", m.capabilities)
        typ, data = m.login(addr, PASSWORD)
        self.assertEqual(typ, "OK")
        self.assertIn(b"[CAPABILITY IMAP4rev1", data[0])
        typ, data = m.capability()
        caps = data[0].decode().split()
        for c in ["IDLE", "UIDPLUS", "MOVE", "QUOTA", "METADATA", "COMPRESS=DEFLATE", "XCHATMAIL"]:
            self.assertIn(c, caps)
        for c in ["CONDSTORE", "QRESYNC", "SPECIAL-USE"]:
            self.assertNotIn(c, caps)
        typ, data = m.select("INBOX")
        self.assertEqual((typ, data), ("OK", [b"0"]))
        m.logout()
        # The account now exists with that password.
        connect(addr).logout()

    def test_wrong_password(self):
        addr = new_addr()
        connect(addr).logout()
        m = connect()
        self.addCleanup(m.shutdown)
        t = time.monotonic()
        with self.assertRaises(imaplib.IMAP4.error) as e:
            m.login(addr, "wrong-password-xyz")
        self.assertIn("AUTHENTICATIONFAILED", str(e.exception))
        print(f"\n  wrong password answered after {time.monotonic() - t:.2f}s")

    def test_starttls_then_login_and_login_before_tls_refused(self):
        addr = new_addr()
        m = imaplib.IMAP4(HOST, PORT, timeout=15)
        self.assertIn("STARTTLS", m.capabilities)
        self.assertIn("LOGINDISABLED", m.capabilities)
        with self.assertRaises(imaplib.IMAP4.error) as e:
            m.login(addr, PASSWORD)
        self.assertIn("PRIVACYREQUIRED", str(e.exception))
        m.starttls(ssl_context=ctx())
        typ, _ = m.login(addr, PASSWORD)
        self.assertEqual(typ, "OK")
        m.logout()

    def test_authenticate_plain(self):
        addr = new_addr()
        m = connect()
        typ, _ = m.authenticate("PLAIN", lambda _: f"\0{addr}\0{PASSWORD}".encode())
        self.assertEqual(typ, "OK")
        m.logout()

    def test_append_idle_exists_and_fetch_exact(self):
        addr = new_addr()
        a = connect(addr)
        a.select("INBOX")
        tag = a._new_tag().decode()
        a.send(f"{tag} IDLE\r\n".encode())
        self.assertEqual(a.readline(), b"+ idling\r\n")
        b = connect(addr)
        msg = message(addr, "exact \xe4 bytes".encode("latin-1").decode("latin-1"))
        got = {}

        def reader():
            got["line"] = a.readline()
            got["t"] = time.monotonic()

        th = threading.Thread(target=reader)
        th.start()
        t0 = time.monotonic()
        typ, data = b.append("INBOX", None, None, msg)
        self.assertEqual(typ, "OK")
        self.assertIn(b"APPENDUID", data[0])
        th.join(15)
        self.assertEqual(got.get("line"), b"* 1 EXISTS\r\n")
        print(f"\n  IDLE EXISTS {1000 * (got['t'] - t0):.1f} ms after APPEND was sent")
        a.send(b"DONE\r\n")
        while True:
            line = a.readline()
            if line.startswith(tag.encode()):
                self.assertEqual(line, f"{tag} OK IDLE terminated\r\n".encode())
                break
        typ, data = a.uid("FETCH", "1:*", "(UID RFC822.SIZE BODY.PEEK[])")
        self.assertEqual(typ, "OK")
        self.assertEqual(data[0][1], msg)
        self.assertIn(f"RFC822.SIZE {len(msg)}".encode(), data[0][0])
        a.logout()
        b.logout()

    def test_metadata_round_trip(self):
        addr = new_addr()
        m = connect(addr)
        typ, data = m._simple_command("SETMETADATA", "INBOX", '(/private/devicetoken "openpgp:TOKEN123")')
        self.assertEqual(typ, "OK")
        typ, data = m._simple_command("GETMETADATA", "INBOX", "(/private/devicetoken)")
        self.assertEqual(typ, "OK")
        typ, data = m._untagged_response(typ, data, "METADATA")
        self.assertEqual(data[0], (b"INBOX (/private/devicetoken {16}", b"openpgp:TOKEN123"))
        typ, data = m._simple_command("GETMETADATA", '""', "(/shared/comment /x/y /private/devicetoken)")
        self.assertEqual(typ, "OK")
        m.logout()

    def test_compress_deflate(self):
        addr = new_addr()
        m = CompressedIMAP(HOST, SPORT, ssl_context=ctx(), timeout=15)
        m.login(addr, PASSWORD)
        msg = message(addr, "squeeze me\r\n" * 500)
        m.append("INBOX", None, None, msg)
        typ, _ = m.compress()
        self.assertEqual(typ, "OK")
        m.select("INBOX")
        typ, data = m.uid("FETCH", "1", "(BODY.PEEK[])")
        self.assertEqual(typ, "OK")
        self.assertEqual(data[0][1], msg)
        typ, data = m._simple_command("COMPRESS", "DEFLATE")
        self.assertEqual(typ, "NO")
        m.logout()

    def test_expunge_seen_by_other_session(self):
        addr = new_addr()
        a = connect(addr)
        for _ in range(2):
            a.append("INBOX", None, None, message(addr))
        b = connect(addr)
        a.select("INBOX")
        b.select("INBOX")
        a.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
        typ, data = a.expunge()
        self.assertEqual(data, [b"1"])
        typ, data = b.noop()
        self.assertEqual(b.response("EXPUNGE"), ("EXPUNGE", [b"1"]))
        typ, data = b.uid("SEARCH", None, "ALL")
        self.assertEqual(data, [b"2"])
        a.logout()
        b.logout()

    def test_copy_move_quota(self):
        addr = new_addr()
        m = connect(addr)
        m.create("Archive")
        m.append("INBOX", "(\\Seen)", None, message(addr))
        m.select("INBOX")
        typ, data = m._simple_command("UID", "COPY", "1", "Archive")
        self.assertEqual(typ, "OK")
        self.assertIn(b"COPYUID", data[0])
        typ, data = m.uid("MOVE", "1", "Archive")
        self.assertEqual(typ, "OK")
        typ, data = m.status("Archive", "(MESSAGES)")
        self.assertEqual(data[0], b'"Archive" (MESSAGES 2)')
        typ, data = m.getquotaroot("INBOX")
        self.assertEqual(typ, "OK")
        self.assertEqual(data[0][0], b'"INBOX" ""')
        self.assertTrue(data[1][0].startswith(b'"" (STORAGE 1 '), data)
        m.logout()


if __name__ == "__main__":
    unittest.main()
