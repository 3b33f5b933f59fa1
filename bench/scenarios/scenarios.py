#!/usr/bin/env python3
"""Issue 30: the real-client scenarios, timed, with the server CPU each one costs.

Runs inside the interop venv (bench/scenarios/run.sh). One chatrelay (RELAY_BIN, a release build)
is started with tests/interop's `Relay` fixture class on a fresh data dir, then:

1. the ten tests of tests/interop/test_chat.py, run by pytest exactly as tests/interop/run.sh runs
   them (same fixtures, same assertions), except that every `Relay(...)` they start is this one
   shared relay (so its CPU can be read around each test; its config has the fetch-window test's
   raised send rate). Per test: the wall time of the test body, and the server CPU (utime + stime
   of the relay process, /proc/PID/stat) from before the test's setup to after its teardown,
   once the relay has gone quiet;
2. three figures, each --rounds times on fresh accounts (the median wall, the mean CPU):
   - attach5: a 5 MiB attachment (random bytes) sent by A until it is fully on B (B's message has
     the whole file);
   - group3: A makes a group with B and C; A, then B, then C send a message, each waited for on the
     two others ("3 messages everywhere");
   - twodev: A1 exports a backup, a second device A2 imports it and comes online ("backup import"),
     B sends to A and both devices get it ("B->A1+A2"), A1 answers B and A2 shows the answer
     ("A1->B on A2"). The figure is the time of the last two; the import is printed beside it.

Prints one row per test and figure, the total server CPU of the ten tests, and the load average,
and writes JSON (--json-out). Every wait is bounded. Exit 0 when everything ran (a failed test is
reported in its row and makes the exit status 1).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
INTEROP = REPO / "tests" / "interop"
sys.path.insert(0, str(INTEROP))

import pytest  # noqa: E402
from deltachat_rpc_client import DeltaChat, EventType, Rpc  # noqa: E402

import conftest  # noqa: E402  tests/interop/conftest.py: Relay, Factory, RELAY_EXTRA

TICK = os.sysconf("SC_CLK_TCK")
# The fetch-window test raises the send rate on its own relay; the shared one must allow it too.
# (Top-level keys first: RELAY_EXTRA opens tables.)
SHARED_EXTRA = "max_user_send_per_minute = 6000\nmax_user_send_burst_size = 1000\n" + conftest.RELAY_EXTRA


def cpu_s(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def quiet_cpu_s(pid, still=0.3, limit=5.0):
    """The CPU once the relay has used none for `still` seconds (bounded by `limit`), so work a
    scenario caused after its last client event (a LOGOUT, a late expunge) is counted in it."""
    end = time.monotonic() + limit
    last = cpu_s(pid)
    while time.monotonic() < end:
        time.sleep(still)
        now = cpu_s(pid)
        if now == last:
            break
        last = now
    return last


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Shared:
    """The shared relay as the tests see it: everything delegated, but `stop` is left to us."""

    def __init__(self, real):
        self.__dict__["_real"] = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def stop(self):
        pass


class Timer:
    """pytest plugin: wall of each test's call phase, server CPU around its whole protocol."""

    def __init__(self, pid, shared):
        self.pid, self.shared, self.rows, self.current = pid, shared, [], None

    def pytest_collection_finish(self, session):
        # pytest (re)imports tests/interop/conftest.py itself: patch the module the tests use.
        mod = sys.modules.get("conftest")
        assert mod is not None and hasattr(mod, "Relay"), "tests/interop/conftest.py not loaded"
        mod.Relay = lambda *a, **k: self.shared

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        c0, t0 = quiet_cpu_s(self.pid), time.perf_counter()
        self.current = {"name": item.name, "outcome": "passed", "call_s": None}
        yield
        self.current["all_s"] = round(time.perf_counter() - t0, 3)
        self.current["server_cpu_s"] = round(quiet_cpu_s(self.pid) - c0, 3)
        self.rows.append(self.current)
        row = self.current
        print(f"  [scenario] {row['name']}: {row['outcome']}, call {row['call_s']} s, "
              f"server CPU {row['server_cpu_s']:.2f} s", file=sys.stderr, flush=True)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        t0 = time.perf_counter()
        yield
        self.current["call_s"] = round(time.perf_counter() - t0, 3)

    def pytest_runtest_logreport(self, report):
        if report.failed and self.current is not None:
            self.current["outcome"] = f"failed ({report.when})"


def wait_event(ac, pred, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = ac.wait_for_event()
        if pred(ev):
            return ev
    raise AssertionError(f"timed out waiting for {what}")


def wait_incoming(ac, text=None, timeout=60):
    """The next IncomingMsg (with `text` if given) on `ac`; returns its snapshot."""
    while True:
        ev = wait_event(ac, lambda e: e.kind == EventType.INCOMING_MSG, "an incoming message", timeout)
        snap = ac.get_message_by_id(ev.msg_id).get_snapshot()
        if text is None or snap.text == text or (snap.text or "").startswith(text + " "):
            return snap


def measured(pid, fn):
    """(wall s, server CPU s) of fn(); the CPU is read once the relay is quiet before and after."""
    c0 = quiet_cpu_s(pid)
    t0 = time.perf_counter()
    extra = fn()
    wall = time.perf_counter() - t0
    return wall, quiet_cpu_s(pid) - c0, extra


def fig_attach5(acf, tmp, pid):
    a, b = acf.accounts(2)
    chat = a.create_chat(b)
    path = tmp / "attach5.bin"
    data = os.urandom(5 * 1024 * 1024)
    path.write_bytes(data)

    def run():
        chat.send_file(str(path))
        snap = wait_incoming(b, timeout=120)
        deadline = time.monotonic() + 120
        # Fully on B: the message's file holds the whole attachment.
        while not (snap.file and os.path.exists(snap.file) and os.path.getsize(snap.file) == len(data)):
            assert time.monotonic() < deadline, "the attachment did not arrive whole"
            time.sleep(0.005)
            snap = b.get_message_by_id(snap.id).get_snapshot()
        with open(snap.file, "rb") as f:
            assert f.read() == data
    return measured(pid, run)


def fig_group3(acf, tmp, pid):
    acs = acf.accounts(3)
    group = acs[0].create_group("trio")
    for ac in acs[1:]:
        group.add_contact(acs[0].create_contact(ac))

    def run():
        chats = {0: group}
        for i, sender in enumerate(acs):
            text = f"group message {i}"
            chats[i].send_text(text)
            for j, ac in enumerate(acs):
                if j != i:
                    snap = wait_incoming(ac, text)
                    chats.setdefault(j, ac.get_chat_by_id(snap.chat_id))
    return measured(pid, run)


def fig_twodev(acf, tmp, pid):
    dc = acf.dc
    a1, b = acf.accounts(2)
    ab, ba = a1.create_chat(b), b.create_chat(a1)
    backups = tmp / "backups"
    backups.mkdir(exist_ok=True)
    devices = {}

    def backup_import():
        # A real export on A1 (IO must be stopped for it) and import on a second device.
        a1.stop_io()
        a1.export_backup(backups)
        a1.bring_online()
        [file] = list(backups.iterdir())
        a2 = dc.add_account()
        a2.import_backup(file)
        a2.bring_online()
        devices["a2"] = a2

    def b_to_both():
        ba.send_text("to both devices")
        for dev in (a1, devices["a2"]):
            wait_incoming(dev, "to both devices")

    def a1_to_b_on_a2():
        sent = ab.send_text("from the first device")
        wait_incoming(b, "from the first device")
        a2 = devices["a2"]

        def on_a2(ev):
            # A1's own message reaches A2 as an outgoing one (MsgsChanged), not IncomingMsg.
            if ev.kind not in (EventType.MSGS_CHANGED, EventType.INCOMING_MSG) or not ev.msg_id:
                return False
            return a2.get_message_by_id(ev.msg_id).get_snapshot().text == "from the first device"
        wait_event(a2, on_a2, "A1's message on A2")
        return sent

    imp = measured(pid, backup_import)
    p1 = measured(pid, b_to_both)
    p2 = measured(pid, a1_to_b_on_a2)
    return (p1[0] + p2[0], p1[1] + p2[1],
            {"import_s": imp[0], "import_cpu_s": imp[1], "b_to_both_s": p1[0], "a1_to_b_on_a2_s": p2[0]})


FIGURES = [
    ("attach5", "5 MiB attachment sent -> fully on the receiver", fig_attach5, 0.9),
    ("group3", "group of three, 3 messages everywhere", fig_group3, 0.45),
    ("twodev", "two devices (backup import, B->A1+A2, A1->B on A2)", fig_twodev, 0.2),
]


def run_figures(relay, pid, rounds, only):
    out = {}
    for key, label, fn, _ in FIGURES:
        if only and key not in only:
            continue
        walls, cpus, extras = [], [], []
        for r in range(rounds):
            with tempfile.TemporaryDirectory(prefix=f"scen-{key}-") as tmp:
                rpc = Rpc(accounts_dir=str(Path(tmp) / "accounts"))
                with rpc:
                    acf = conftest.Factory(DeltaChat(rpc), relay)
                    wall, cpu, extra = fn(acf, Path(tmp), pid)
            walls.append(wall)
            cpus.append(cpu)
            if isinstance(extra, dict):
                extras.append(extra)
            print(f"  [figure] {key} round {r + 1}: {wall:.3f} s, server CPU {cpu:.3f} s"
                  + (f" {json.dumps({k: round(v, 3) for k, v in extra.items()})}" if isinstance(extra, dict) else ""),
                  file=sys.stderr, flush=True)
        res = {"label": label, "wall_s": [round(w, 3) for w in walls], "wall_median_s": round(statistics.median(walls), 3),
               "server_cpu_s": [round(c, 3) for c in cpus], "server_cpu_mean_s": round(statistics.mean(cpus), 3)}
        for k in (extras[0].keys() if extras else []):
            res[k + "_median"] = round(statistics.median(e[k] for e in extras), 3)
        out[key] = res
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json-out")
    p.add_argument("--rounds", type=int, default=3, help="rounds of each figure (default 3)")
    p.add_argument("-k", default=None, help="pytest -k expression for the tests (default: all ten)")
    p.add_argument("--no-tests", action="store_true", help="only the figures")
    p.add_argument("--figures", default="attach5,group3,twodev", help="which figures ('' for none)")
    p.add_argument("--merge-into", help="also store the results as step 'scenarios' of this compare.py JSON")
    p.add_argument("--keep", action="store_true", help="keep the relay's data dir and log")
    p.add_argument("--pause", action="store_true",
                   help="print the relay pid and wait for Enter before the run (to attach perf)")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="chatrelay-scenarios-"))
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {os.cpu_count()} cores, load {loadavg()}, "
          f"relay {conftest.BIN}", flush=True)
    t0 = time.perf_counter()
    real = conftest.Relay(tmp / "relay", extra=SHARED_EXTRA)
    pid = real.proc.pid
    start = {"start_s": round(time.perf_counter() - t0, 3), "start_cpu_s": round(quiet_cpu_s(pid), 3)}
    shared = Shared(real)
    results = {"relay_bin": conftest.BIN, "load_before": loadavg(), **start}
    rc = 0
    try:
        if args.pause:
            print(f"relay pid {pid}; press Enter to start", flush=True)
            sys.stdin.readline()
        if not args.no_tests:
            timer = Timer(pid, shared)
            argv = [str(INTEROP / "test_chat.py"), "-q", "-p", "no:cacheprovider", "--rootdir", str(INTEROP),
                    "-o", "addopts="]
            if args.k:
                argv += ["-k", args.k]
            rc = int(pytest.main(argv, plugins=[timer]))
            results["tests"] = timer.rows
            results["tests_server_cpu_s"] = round(sum(r["server_cpu_s"] for r in timer.rows), 3)
            results["tests_call_s"] = round(sum(r["call_s"] or 0 for r in timer.rows), 3)
        only = [f for f in args.figures.split(",") if f]
        if only:
            results["figures"] = run_figures(shared, pid, args.rounds, only)
        results["load_after"] = loadavg()
    finally:
        real.stop()
        if args.keep:
            print(f"# kept {tmp}", flush=True)
    print_table(results)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    if args.merge_into:
        merged = {"name": "chatrelay", "steps": {}}
        if os.path.exists(args.merge_into):
            with open(args.merge_into) as f:
                merged = json.load(f)
        merged.setdefault("steps", {})["scenarios"] = {"result": results}
        with open(args.merge_into, "w") as f:
            json.dump(merged, f, indent=1)
    return 1 if rc else 0


def print_table(res):
    print(f"\n# load average before {res['load_before']}, after {res.get('load_after')}; "
          f"relay start {res['start_s']} s, {res['start_cpu_s']} s CPU (key generation; not counted below)")
    print("| scenario | wall | server CPU |\n|---|---|---|")
    for r in res.get("tests", []):
        note = "" if r["outcome"] == "passed" else f" **{r['outcome']}**"
        print(f"| {r['name']}{note} | {r['call_s']} s | {r['server_cpu_s']:.2f} s |")
    if "tests" in res:
        print(f"| **the {len(res['tests'])} real-client scenarios** | {res['tests_call_s']:.2f} s | "
              f"**{res['tests_server_cpu_s']:.2f} s** (target ≤ 0.35 s) |")
    targets = {k: t for k, _, _, t in FIGURES}
    for key, f in res.get("figures", {}).items():
        extra = ""
        if key == "twodev":
            extra = (f" (import {f['import_s_median']} s, {f['import_cpu_s_median']} s CPU; "
                     f"B->A1+A2 {f['b_to_both_s_median']} s, A1->B on A2 {f['a1_to_b_on_a2_s_median']} s)")
        print(f"| {f['label']}, median of {len(f['wall_s'])} | **{f['wall_median_s']} s** (target ≤ {targets[key]} s)"
              f"{extra} | {f['server_cpu_mean_s']:.3f} s |")


if __name__ == "__main__":
    sys.exit(main())
