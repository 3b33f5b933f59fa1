#!/usr/bin/env python3
"""P1 (issue 11): real Delta Chat clients, A -> B, send -> IncomingMsg latency.

Runs inside the interop venv (deltachat-rpc-server/-client, see bench/p1/run.sh, which creates it
through tests/interop/setup.sh). Against any IMAP+SMTP server on loopback:

  p1.py --host 127.0.0.1 --imap-port 993 --smtp-port 465 --smtp-security ssl \
        --addr-a a@relay.test --addr-b b@relay.test --password PW --insecure \
        -n 30 --warmup 3 --json-out p1.json

1. Two fresh Delta Chat accounts A and B (one deltachat-rpc-server, accounts dir in a temp dir
   removed afterwards) get manual server settings (IMAP implicit TLS, SMTP implicit TLS or
   STARTTLS, "accept invalid certificates" with --insecure); no autoconfig, no DNS.
2. B scans A's Secure-Join QR code (what a real user does), both wait for the handshake; then one
   message each way. Every measured message must show the padlock (end-to-end encrypted).
3. A sends N text messages to B one at a time (after --warmup unmeasured ones); for each, the time
   from just before the send call to B's IncomingMsg event (stamped when the event batch reaches
   this process) is the sample. A's MsgDelivered (SMTP done) and a few of B's core log lines are
   stamped too, to see where the time goes.

Prints min/median/p90/max and writes one JSON line (--json-out). Every wait is bounded
(--timeout per event, --total-timeout for the whole run). Exit 0 on success, 1 on failure.
"""
import argparse
import json
import logging
import os
import queue
import shutil
import signal
import statistics
import sys
import tempfile
import time

from deltachat_rpc_client import DeltaChat, Rpc

T0 = time.perf_counter()


class StampedQueue(queue.Queue):
    """Event queue that records when each event reached this process."""

    def put(self, item, block=True, timeout=None):
        if isinstance(item, dict):
            item["_t"] = time.perf_counter()
        super().put(item, block, timeout)


class StampedRpc(Rpc):
    def get_queue(self, account_id):
        if account_id not in self.event_queues:
            self.event_queues[account_id] = StampedQueue()
        return self.event_queues[account_id]


def log(msg):
    print(f"[{time.perf_counter() - T0:7.2f}s] {msg}", file=sys.stderr, flush=True)


class Waiter:
    """Bounded waits on one account's events; keeps the events seen (for the trace)."""

    def __init__(self, rpc, acc, timeout):
        self.rpc, self.acc, self.timeout = rpc, acc, timeout
        self.seen = []

    def next(self, deadline):
        left = deadline - time.perf_counter()
        if left <= 0:
            raise queue.Empty
        ev = self.rpc.get_queue(self.acc.id).get(timeout=left)
        self.seen.append(ev)
        if ev.get("kind") == "Error":
            log(f"account {self.acc.id} error: {ev.get('msg')}")
        return ev

    def until(self, pred, what):
        deadline = time.perf_counter() + self.timeout
        try:
            while True:
                ev = self.next(deadline)
                if pred(ev):
                    return ev
        except queue.Empty:
            raise SystemExit(f"timeout ({self.timeout:.0f} s) waiting for {what} on account {self.acc.id}")

    def drain(self):
        q = self.rpc.get_queue(self.acc.id)
        while True:
            try:
                self.seen.append(q.get_nowait())
            except queue.Empty:
                return


def proc_cpu_s(pid):
    """utime+stime of one process, seconds (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        fields = st[st.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def first_t(events, t0, pred):
    return next((e["_t"] for e in events if e["_t"] >= t0 and pred(e)), None)


def phases(t0, t_call, a_events, b_events, t_in):
    """Where the time of one message went, from the core's own log lines (ms, None if unseen)."""
    msg = lambda e: e.get("msg") or ""
    a_try = first_t(a_events, t0, lambda e: "over SMTP" in msg(e) and "Try number" in msg(e))
    a_sent = first_t(a_events, t0, lambda e: e.get("kind") == "SmtpMessageSent")
    b_new = first_t(b_events, t0, lambda e: "Idle has NewData" in msg(e))
    b_imf = first_t(b_events, t0, lambda e: "to receive_imf()" in msg(e))
    d = lambda x, y: round((y - x) * 1000, 2) if x is not None and y is not None else None
    return {
        "a_send_call": d(t0, t_call),            # A: render, encrypt, sign, queue (RPC returns)
        "a_queue_to_smtp": d(t_call, a_try),     # A: SMTP loop wakes up
        "a_smtp": d(a_try, a_sent),              # SMTP transaction on the open connection
        "server_notify": d(a_sent, b_new),       # SMTP done -> B's IDLE sees EXISTS
        "b_fetch": d(b_new, b_imf),              # B: UID FETCH round trips
        "b_receive": d(b_imf, t_in),             # B: parse, decrypt, verify, store -> IncomingMsg
    }


def transport(args, addr):
    return {
        "addr": addr,
        "password": args.password,
        "imapServer": args.host,
        "imapPort": args.imap_port,
        "imapSecurity": "ssl",
        "smtpServer": args.host,
        "smtpPort": args.smtp_port,
        "smtpSecurity": args.smtp_security,
        "certificateChecks": "acceptInvalidCertificates" if args.insecure else "strict",
    }


def stats(xs):
    if not xs:
        return None
    s = sorted(xs)
    q = lambda p: s[min(len(s) - 1, int(round(p * (len(s) - 1))))]
    return {"n": len(s), "min": s[0], "median": statistics.median(s), "p90": q(0.9), "max": s[-1],
            "mean": statistics.fmean(s)}


def setup_account(dc, args, addr, name):
    ac = dc.add_account()
    ac.set_config("displayname", name)
    # Stay on this one loopback server: never pick or add another relay on its own.
    ac.set_config("autorelay", "0")
    t = time.perf_counter()
    ac.add_or_update_transport(transport(args, addr))
    if not ac.is_configured():
        raise SystemExit(f"{addr}: not configured")
    log(f"{name} = {addr} configured in {time.perf_counter() - t:.2f} s")
    return ac


def measure(args, rpc, dc):
    a = setup_account(dc, args, args.addr_a, "A")
    b = setup_account(dc, args, args.addr_b, "B")
    wa, wb = Waiter(rpc, a, args.timeout), Waiter(rpc, b, args.timeout)
    # Issue 30: with --addr-c, C joins too and the messages go to a group of A, B and C; a
    # sample ends when both B and C have it.
    c = setup_account(dc, args, args.addr_c, "C") if args.addr_c else None
    wc = Waiter(rpc, c, args.timeout) if c else None
    for ac in (a, b, c):
        if ac:
            ac.start_io()
    for w in (wa, wb, wc):
        if w:
            w.until(lambda e: e.get("kind") == "ImapInboxIdle", "the first IMAP IDLE")
    info = rpc.get_system_info()

    # Secure-Join: B scans A's QR code; several handshake messages go both ways.
    t = time.perf_counter()
    b.secure_join(a.get_qr_code())
    wa.until(lambda e: e.get("kind") == "SecurejoinInviterProgress" and e.get("progress") == 1000,
             "Secure-Join (inviter)")
    wb.until(lambda e: e.get("kind") == "SecurejoinJoinerProgress" and e.get("progress") == 1000,
             "Secure-Join (joiner)")
    log(f"Secure-Join done in {time.perf_counter() - t:.2f} s")
    if c:
        c.secure_join(a.get_qr_code())
        wc.until(lambda e: e.get("kind") == "SecurejoinJoinerProgress" and e.get("progress") == 1000,
                 "Secure-Join of C (joiner)")
    chat_ab = a.get_chat_by_contact(a.get_contact_by_addr(args.addr_b))
    chat_ba = b.get_chat_by_contact(b.get_contact_by_addr(args.addr_a))
    if chat_ab is None or chat_ba is None:
        raise SystemExit("no 1:1 chat after Secure-Join")
    # First message each way, as users do after scanning.
    chat_ab.send_text("hi B")
    wb.until(lambda e: e.get("kind") == "IncomingMsg", "A's first message")
    chat_ba.send_text("hi A")
    wa.until(lambda e: e.get("kind") == "IncomingMsg", "B's first message")
    # Delta Chat core limits its own sending (a leaky bucket of 3 messages draining 1 per second,
    # core's context.rs Ratelimit::new(3 s, 3.0)); the Secure-Join handshake filled A's bucket.
    # Let it drain so the limiter is not what is measured.
    time.sleep(max(args.interval, 4.0))
    if c:
        chat_ab = a.create_group("p1 group")
        chat_ab.add_contact(a.get_contact_by_addr(args.addr_b), a.get_contact_by_addr(args.addr_c))
        chat_ab.send_text("hi group")
        for w in (wb, wc):
            w.until(lambda e: e.get("kind") == "IncomingMsg", "the group's first message")
        time.sleep(max(args.interval, 4.0))

    samples, delivered, trace, unencrypted, limited, parts = [], [], [], 0, 0, []
    # Issue 30: --file-size sends each message with a random (incompressible) attachment of that
    # size; B's IncomingMsg then means the whole message was fetched, decrypted and stored.
    attachment = None
    if args.file_size:
        fd, attachment = tempfile.mkstemp(prefix="p1-attachment-", suffix=".bin")
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(args.file_size))
    cpu0 = proc_cpu_s(rpc.process.pid)
    for i in range(args.warmup + args.n):
        for w in (wa, wb, wc):
            if w:
                w.seen.clear()
                w.drain()
        text = f"p1 {i}"
        t0 = time.perf_counter()
        if attachment:
            msg = chat_ab.send_message(text=text, file=attachment, filename="attachment.bin")
        else:
            msg = chat_ab.send_text(text)
        t_call = time.perf_counter()
        ev = wb.until(lambda e: e.get("kind") == "IncomingMsg", f"message {i}")
        t_in = ev["_t"]
        if wc:
            t_in = max(t_in, wc.until(lambda e: e.get("kind") == "IncomingMsg", f"message {i} on C")["_t"])
        if attachment:
            # Delta Chat 2.x announces a large message with a small pre-message first; "fully on
            # the receiver" is when B's copy is downloaded (the event that shows it).
            mid = ev["msgId"]
            done = lambda: b.get_message_by_id(mid).get_snapshot().download_state == "Done"
            if not done():
                t_in = wb.until(lambda e: done(), f"full download of {i}")["_t"]
        # A's SMTP send finished (normally before B's event; wait for it if not).
        if not any(e.get("kind") == "MsgDelivered" and e.get("msgId") == msg.id for e in wa.seen):
            wa.until(lambda e: e.get("kind") == "MsgDelivered" and e.get("msgId") == msg.id,
                     f"MsgDelivered of {i}")
        t_sent = next(e["_t"] for e in wa.seen if e.get("kind") == "MsgDelivered" and e.get("msgId") == msg.id)
        snap = b.get_message_by_id(ev["msgId"]).get_snapshot()
        # Some versions show an attachment in the text ("p1 0 [attachment.bin – 5 MiB]").
        if snap.text != text and not (attachment and snap.text.startswith(text + " ")):
            raise SystemExit(f"B got {snap.text!r}, expected {text!r}")
        if not snap.show_padlock:
            unencrypted += 1
        # Did the client's own limiter hold this message back?
        held = any("rate limited" in (e.get("msg") or "") and e["_t"] >= t0 for e in wa.seen)
        ms = lambda t: round((t - t0) * 1000, 2)
        if i >= args.warmup:
            if held:
                limited += 1
                log(f"warning: message {i} waited for Delta Chat's send rate limiter (raise --interval)")
            samples.append(ms(t_in))
            parts.append(phases(t0, t_call, wa.seen, wb.seen, t_in))
            delivered.append(ms(t_sent))
            if len(trace) < args.trace:
                trace.append({
                    "msg": i, "send_call_ms": ms(t_call), "a_msg_delivered_ms": ms(t_sent),
                    "b_incoming_ms": ms(t_in),
                    # Events since the previous message (negative times) and during this one.
                    "a": [(ms(e["_t"]), e.get("kind"), (e.get("msg") or "")[:160]) for e in wa.seen],
                    "b": [(ms(e["_t"]), e.get("kind"), (e.get("msg") or "")[:160]) for e in wb.seen],
                })
        log(f"{'warm-up' if i < args.warmup else 'msg'} {i}: delivered(SMTP) {ms(t_sent):.1f} ms,"
            f" B IncomingMsg {ms(t_in):.1f} ms")
        time.sleep(args.interval)
    cpu1 = proc_cpu_s(rpc.process.pid)
    if attachment:
        os.unlink(attachment)
    n_all = args.warmup + args.n
    cpu_ms = round((cpu1 - cpu0) * 1000 / n_all, 1) if cpu0 is not None and cpu1 is not None else None
    if unencrypted:
        raise SystemExit(f"{unencrypted} messages arrived without end-to-end encryption")
    return {
        "server": args.name, "file_size": args.file_size, "group": bool(args.addr_c), "core_version": info.get("deltachat_core_version"),
        "smtp_security": args.smtp_security, "interval_s": args.interval, "warmup": args.warmup,
        "client_ratelimited": limited,
        # CPU of deltachat-rpc-server (both accounts) per message, pauses included.
        "client_cpu_ms_per_msg": cpu_ms,
        "latency_ms": stats(samples), "smtp_delivered_ms": stats(delivered),
        # Median of each phase over the measured messages (core log lines as markers).
        "phases_median_ms": {k: (round(statistics.median(v), 2) if v else None) for k, v in
                             ((k, [p[k] for p in parts if p[k] is not None]) for k in (parts[0] if parts else {}))},
        "samples_ms": samples, "trace": trace,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--imap-port", type=int, required=True, help="IMAP implicit TLS port")
    p.add_argument("--smtp-port", type=int, required=True)
    p.add_argument("--smtp-security", choices=["ssl", "starttls"], default="ssl")
    p.add_argument("--addr-a", required=True)
    p.add_argument("--addr-b", required=True)
    p.add_argument("--addr-c", help="a third account: messages go to a group of A, B and C (issue 30)")
    p.add_argument("--password", required=True)
    p.add_argument("--insecure", action="store_true", help="accept invalid (self-signed) certificates")
    p.add_argument("-n", type=int, default=30, help="measured messages")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured messages first")
    p.add_argument("--interval", type=float, default=1.0,
                   help="pause after each message, s (Delta Chat sends at most 1 message/s after a burst of 3)")
    p.add_argument("--timeout", type=float, default=60, help="limit for each wait, s")
    p.add_argument("--total-timeout", type=float, default=600, help="limit for the whole run, s")
    p.add_argument("--trace", type=int, default=3, help="messages whose event timeline goes in the JSON")
    p.add_argument("--rpc-log", help="file for deltachat-rpc-server's stderr (default: discarded)")
    p.add_argument("--file-size", type=int, default=0,
                   help="attach a random file of this many bytes to every message (issue 30: 5242880)")
    p.add_argument("--json-out")
    args = p.parse_args()

    def on_alarm(*_):
        raise TimeoutError(f"P1 run exceeded {args.total_timeout:.0f} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, args.total_timeout)
    tmp = tempfile.mkdtemp(prefix="chatrelay-p1.")
    err = open(args.rpc_log, "ab") if args.rpc_log else open(os.devnull, "wb")
    rpc = StampedRpc(accounts_dir=os.path.join(tmp, "accounts"), stderr=err)
    res, rc = None, 1
    try:
        rpc.start()
        res = measure(args, rpc, DeltaChat(rpc))
        rc = 0
    except (SystemExit, TimeoutError, Exception) as e:  # one clear line, then clean up
        log(f"P1 failed: {e}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        rpc.closing = True
        logging.disable(logging.ERROR)  # the client's loops complain when the server goes away
        proc = getattr(rpc, "process", None)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except Exception:
                proc.kill()
                proc.wait(10)
            rpc._shutdown_loops()
        err.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if res:
        l, d = res["latency_ms"], res["smtp_delivered_ms"]
        print(f"P1 {args.name}: A->B send -> B IncomingMsg over {l['n']} messages (core {res['core_version']}):"
              f" min {l['min']:.1f} ms, median {l['median']:.1f} ms, p90 {l['p90']:.1f} ms, max {l['max']:.1f} ms;"
              f" A's SMTP send done at median {d['median']:.1f} ms;"
              f" Delta Chat CPU {res['client_cpu_ms_per_msg']} ms per message", flush=True)
        print("  phases (median ms): " + ", ".join(f"{k} {v}" for k, v in res["phases_median_ms"].items()),
              flush=True)
        if args.json_out:
            with open(args.json_out, "w") as f:
                f.write(json.dumps(res) + "\n")
    sys.exit(rc)


if __name__ == "__main__":
    main()
