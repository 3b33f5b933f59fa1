#!/usr/bin/env python3
"""Side-by-side workloads for bench/run.sh.

  compare.py run NAME OUT.json [--cold-start-ms MS] -- MAILBENCH-SERVER-ARGS...
      runs every workload of issue 11 against one server (through mb.py, i.e. the
      unchanged shared mailbench.py), recording each figure, the wall time, the
      CPU the Python client used and the CPU the server used during that step.
  compare.py p1 NAME OUT.json -- --imap-port P --smtp-port P [--server-pid PID|--server-pidfile F]...
      P1: real Delta Chat clients A -> B (bench/p1), added to OUT.json as step "p1";
      recorded as skipped when the Delta Chat venv cannot be set up.
  compare.py table CHATRELAY.json CLASSIC.json
      prints one table: both figures, the ratio (how many times better chatrelay
      is; > 1 means chatrelay wins) and the issue's target.

Only the standard library. Every step has a time limit (STEP_TIMEOUT seconds).
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MB = [sys.executable, os.path.join(HERE, "mb.py")]
STEP_TIMEOUT = int(os.environ.get("STEP_TIMEOUT", "600"))
N_LAT = int(os.environ.get("N_LAT", "100"))
N_RECONNECT = int(os.environ.get("N_RECONNECT", "100"))
PREFILL = int(os.environ.get("PREFILL", "1000"))
IDLE_CONNS = int(os.environ.get("IDLE_CONNS", "1000"))
HIBERNATE_WAIT = float(os.environ.get("HIBERNATE_WAIT", "35"))
P1_N = int(os.environ.get("P1_N", "30"))
P1_ATTACH_N = int(os.environ.get("P1_ATTACH_N", "4"))
P1_GROUP_N = int(os.environ.get("P1_GROUP_N", "10"))
LOADGEN = os.environ.get("LOADGEN", "")
LG_ONLY = os.environ.get("LG_ONLY", "") not in ("", "0")
LG_IDLE_CONNS = int(os.environ.get("LG_IDLE_CONNS", "10000"))
IDLE_FMT = "idle{n:05d}@{domain}"

# (key, mailbench subcommand args, global args before the subcommand)
def steps():
    return [
        ("rss_rest", [], ["rss"], ["--repeat", "3"]),
        ("p2", ["--sender-base", "1", "--rcpt-base", "2"], ["latency", "-n", str(N_LAT), "--interval", "0.02"], []),
        ("p2_reconnect", ["--sender-base", "1", "--rcpt-base", "5"],
         ["latency", "-n", str(N_RECONNECT), "--interval", "0.02", "--smtp-reconnect"], []),
        ("prefill_1", ["--sender-base", "3", "--rcpt-base", "4"], ["throughput", "-k", "1", "-m", str(PREFILL)], []),
        ("p2_full", ["--sender-base", "3", "--rcpt-base", "4"], ["latency", "-n", str(N_LAT), "--interval", "0.02"], []),
        ("p3", ["--sender-base", "11", "--rcpt-base", "21"], ["throughput", "-k", "8", "-m", "100"], []),
        ("prefill_8", ["--sender-base", "11", "--rcpt-base", "21"], ["throughput", "-k", "8", "-m", str(PREFILL)], []),
        ("p3_full", ["--sender-base", "11", "--rcpt-base", "21"], ["throughput", "-k", "8", "-m", "100"], []),
        ("p3_1m", ["--sender-base", "31", "--rcpt-base", "41", "--msg-size", "1m"],
         ["throughput", "-k", "4", "-m", "25"], []),
        ("fanout_first", ["--sender-base", "1"],
         ["fanout", "-c", str(IDLE_CONNS), "--idle-base", "101", "-n", "0", "--settle", "2"], []),
        ("fanout", ["--sender-base", "1"],
         ["fanout", "-c", str(IDLE_CONNS), "--idle-base", "101", "-n", "50", "--settle", "5",
          "--hibernate-wait", str(HIBERNATE_WAIT)], []),
        ("rss_after", [], ["rss"], ["--repeat", "3"]),
    ]


# The Rust load generator: same workloads, own users (fresh mailboxes for P2/P3), then
# LG_IDLE_CONNS idle connections as idle00001.. (9 characters like benchNNNN, so chatrelay's
# default username rules accept them; the first open creates the accounts on chatrelay), from
# 8 loopback addresses (chatrelay caps connections per IP at a fifth of max_imap_connections).
def lg_steps():
    return [
        ("lg_p2", ["--sender-base", "1", "--rcpt-base", "6"], ["latency", "-n", str(N_LAT), "--interval", "0.02"]),
        ("lg_p2_reconnect", ["--sender-base", "1", "--rcpt-base", "7"],
         ["latency", "-n", str(N_RECONNECT), "--interval", "0.02", "--reconnect"]),
        ("lg_prefill_1", ["--sender-base", "8", "--rcpt-base", "9"], ["throughput", "-k", "1", "-m", str(PREFILL)]),
        ("lg_p2_full", ["--sender-base", "8", "--rcpt-base", "9"], ["latency", "-n", str(N_LAT), "--interval", "0.02"]),
        ("lg_p3", ["--sender-base", "51", "--rcpt-base", "61"], ["throughput", "-k", "8", "-m", "100"]),
        ("lg_p3_64", ["--sender-base", "2001", "--rcpt-base", "2101"], ["throughput", "-k", "64", "-m", "100"]),
        ("lg_p3_1m", ["--sender-base", "71", "--rcpt-base", "81", "--msg-size", "1m"],
         ["throughput", "-k", "4", "-m", "25"]),
        ("lg_fanout_first", ["--sender-base", "1"],
         ["fanout", "-c", str(LG_IDLE_CONNS), "--idle-fmt", IDLE_FMT, "--idle-base", "1", "--source-ips", "8",
          "-n", "0", "--settle", "2"]),
        ("lg_fanout", ["--sender-base", "1"],
         ["fanout", "-c", str(LG_IDLE_CONNS), "--idle-fmt", IDLE_FMT, "--idle-base", "1", "--source-ips", "8",
          "-n", str(N_LAT),
          "--interval", "0.02",
          "--settle", "5"]),
    ]


def proc_tree(roots):
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(children.get(p, []))
    return seen


def server_cpu_s(roots):
    """utime+stime (+ reaped children) of the server tree, seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in proc_tree(roots):
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, ValueError):
            continue
    return total / tick


def server_roots(server_args):
    roots = []
    it = iter(server_args)
    for a in it:
        if a == "--server-pid":
            roots.append(int(next(it)))
        elif a == "--server-pidfile":
            with open(next(it)) as f:
                roots.append(int(f.read().split()[0]))
    return roots


def measure(argv, json_path, roots):
    """Runs one client command; returns (step record with wall, client and server CPU, JSON lines)."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = server_cpu_s(roots)
    t0 = time.perf_counter()
    try:
        rc = subprocess.run(argv, timeout=STEP_TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    wall = time.perf_counter() - t0
    cpu1 = server_cpu_s(roots)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    with open(json_path) as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    return {"rc": rc, "wall_s": wall, "client_cpu_s": client, "server_cpu_s": cpu1 - cpu0}, lines


def print_cpu(step, extra=""):
    wall, client, server = step["wall_s"], step["client_cpu_s"], step["server_cpu_s"]
    print(f"    rc={step['rc']} wall={wall:.1f}s client CPU {client:.1f}s ({100 * client / wall:.0f}%),"
          f" server CPU {server:.1f}s ({100 * server / wall:.0f}%) {extra}".rstrip(), flush=True)


def run_step(label, argv, roots):
    """Runs one client command; returns the step record (wall, client and server CPU, result)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as js:
        argv = [a if a != "@JSON@" else js.name for a in argv]
        shown = argv[2:] if argv[:2] == MB else argv[1:]
        print(f"### {label}: {os.path.basename(argv[0]) if argv[:2] != MB else 'mailbench'} {' '.join(shown)}", flush=True)
        step, lines = measure(argv, js.name, roots)
    if lines:
        last = json.loads(lines[-1])
        step["result"] = last["median"]
        if "notes" in last:
            step["notes"] = last["notes"]
    print_cpu(step)
    return step


def run(name, out, server_args, cold_start_ms):
    results = {"name": name, "cold_start_ms": cold_start_ms, "steps": {}}
    if LG_ONLY and os.path.exists(out):
        with open(out) as f:
            results = json.load(f)
    roots = server_roots(server_args)

    def save():
        with open(out, "w") as f:
            json.dump(results, f, indent=1)

    for key, pre, sub, post in ([] if LG_ONLY else steps()):
        if key in ("rss_after", "fanout"):
            # Let the server settle after the load; before the second fanout this also lets
            # chatrelay's trim (every 3 s after connections closed) give back the first one's
            # memory, so its "at rest" baseline is a rested server and not a warm heap.
            time.sleep(5)
        # "--repeat" is a global option: it goes in front of the subcommand.
        argv = MB + server_args + pre + post + ["--json-out", "@JSON@"] + sub
        results["steps"][key] = run_step(f"{name}: {key}", argv, roots)
        save()
    if not LOADGEN:
        return
    results["loadgen_idle_conns"] = LG_IDLE_CONNS
    for key, pre, sub in lg_steps():
        argv = [LOADGEN] + server_args + pre + ["--json-out", "@JSON@"] + sub
        results["steps"][key] = run_step(f"{name}: {key}", argv, roots)
        save()


def run_p1(name, out, args):
    """P1 through bench/p1/run.sh (Delta Chat venv via tests/interop/setup.sh). Never fails the
    run: a failure or a missing venv is recorded in the step (rc, note). Then (issue 30) the same
    clients send P1_ATTACH_N messages with a 5 MiB attachment (step "p1_5m") and P1_GROUP_N
    messages to a group of three (step "p1_group", a third account joins)."""
    run_p1_step(name, out, args, "p1", ["-n", str(P1_N), "--warmup", "3"])
    if P1_ATTACH_N > 0:
        run_p1_step(name, out, args, "p1_5m", ["-n", str(P1_ATTACH_N), "--warmup", "1", "--file-size", "5242880"])
    if P1_GROUP_N > 0:
        # bench1193 is used by no other step either.
        run_p1_step(name, out, args, "p1_group", ["-n", str(P1_GROUP_N), "--warmup", "1", "--interval", "1",
                                                 "--addr-c", "bench1193@relay.test"])


def run_p1_step(name, out, args, key, extra):
    results = {"name": name, "steps": {}}
    if os.path.exists(out):
        with open(out) as f:
            results = json.load(f)
    roots = server_roots(args)
    client_args, it = [], iter(args)
    for a in it:
        if a in ("--server-pid", "--server-pidfile"):
            next(it)
        else:
            client_args.append(a)
    with tempfile.NamedTemporaryFile("r", suffix=".json") as js:
        # bench1191/1192 exist on the classic stack and are used by no other step.
        argv = [os.path.join(HERE, "p1", "run.sh"), "--name", name, "--addr-a", "bench1191@relay.test",
                "--addr-b", "bench1192@relay.test", "--password", "bench-password", "--insecure",
                "--json-out", js.name] + extra + client_args
        print(f"### {name}: {key}: {' '.join(argv[1:])}", flush=True)
        step, lines = measure(argv, js.name, roots)
    rc = step["rc"]
    if rc == 3:
        step["note"] = "skipped: the Delta Chat venv (tests/interop/setup.sh) could not be set up"
    elif lines:
        step["result"] = json.loads(lines[-1])
    else:
        step["note"] = f"failed (rc={rc}), see the output above"
    print_cpu(step, step.get("note", ""))
    results["steps"][key] = step
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


def get(res, *path):
    v = res.get("steps", {})
    for p in path:
        if not isinstance(v, dict) or p not in v:
            return None
        v = v[p]
    return v


def cpu_note(res, key):
    s = res.get("steps", {}).get(key)
    if not s or not s.get("wall_s"):
        return ""
    return f"{100 * s['client_cpu_s'] / s['wall_s']:.0f}/{100 * s['server_cpu_s'] / s['wall_s']:.0f}"


LG = " (Rust loadgen)"


def lg_conns(step):
    """Cell note when a server held fewer idle connections than asked for."""
    def note(r):
        n = get(r, step, "result", "connections")
        return f" ({n:,} conns)" if n is not None and n != LG_IDLE_CONNS else ""
    return note


# (label, extractor(results) -> number or None, unit, higher_is_better, target text, target check
#  [, note(results) -> text appended to the cell])
def rows():
    lat = lambda step, q: (lambda r: get(r, step, "result", "fetched_ms", q))
    lgn = f"{LG_IDLE_CONNS:,}"
    fan = lambda step, *k: (lambda r: get(r, step, "result", *k))
    sc = lambda fig, k: (lambda r: get(r, "scenarios", "result", "figures", fig, k))
    return [
        ("P1 real Delta Chat client A→B median", lambda r: get(r, "p1", "result", "latency_ms", "median"), "ms",
         False, "≤ 40 ms", lambda v: v <= 40),
        ("5 MiB attachment, real Delta Chat A→B fully on B, median",
         lambda r: get(r, "p1_5m", "result", "latency_ms", "median"), "ms", False, "≤ 900 ms", lambda v: v <= 900),
        ("server CPU of the 5 MiB attachment step", lambda r: get(r, "p1_5m", "server_cpu_s"), "s", False, "", None),
        ("group of three, real Delta Chat A→B and C, median", lambda r: get(r, "p1_group", "result", "latency_ms", "median"),
         "ms", False, "", None),
        ("server CPU of the group step", lambda r: get(r, "p1_group", "server_cpu_s"), "s", False, "", None),
        # Issue 30: bench/scenarios (chatrelay only: the tests make accounts through /new).
        ("server CPU, the 10 real-client scenarios (tests/interop)",
         lambda r: get(r, "scenarios", "result", "tests_server_cpu_s"), "s", False, "≤ 0.35 s", lambda v: v <= 0.35),
        ("5 MiB attachment sent → fully on the receiver", sc("attach5", "wall_median_s"), "s", False, "≤ 0.9 s",
         lambda v: v <= 0.9),
        ("group of three, 3 messages everywhere", sc("group3", "wall_median_s"), "s", False, "≤ 0.45 s",
         lambda v: v <= 0.45),
        ("two devices (backup import, B→A1+A2, A1→B on A2)", sc("twodev", "wall_median_s"), "s", False, "≤ 0.2 s",
         lambda v: v <= 0.2),
        ("P2 4 KB submit→EXISTS→FETCH p50", lat("p2", "median"), "ms", False, "≤ 1 ms", lambda v: v <= 1),
        ("P2 4 KB submit→EXISTS→FETCH p50" + LG, lat("lg_p2", "median"), "ms", False, "≤ 1 ms", lambda v: v <= 1),
        ("P2 p99", lat("p2", "p99"), "ms", False, "≤ 5 ms", lambda v: v <= 5),
        ("P2 p99" + LG, lat("lg_p2", "p99"), "ms", False, "≤ 5 ms", lambda v: v <= 5),
        ("P2 250 after DATA p50" + LG, lambda r: get(r, "lg_p2", "result", "smtp_accepted_ms", "median"), "ms",
         False, "", None),
        ("P2 (1,000 in mailbox) p50", lat("p2_full", "median"), "ms", False, "≤ 1 ms", lambda v: v <= 1),
        ("P2 (1,000 in mailbox) p99", lat("p2_full", "p99"), "ms", False, "≤ 5 ms", lambda v: v <= 5),
        ("P2 (1,000 in mailbox) p50" + LG, lat("lg_p2_full", "median"), "ms", False, "≤ 1 ms", lambda v: v <= 1),
        ("P2 (1,000 in mailbox) p99" + LG, lat("lg_p2_full", "p99"), "ms", False, "≤ 5 ms", lambda v: v <= 5),
        ("P2' new TLS+AUTH per msg p50", lat("p2_reconnect", "median"), "ms", False, "≤ 5 ms", lambda v: v <= 5),
        ("P2' new TLS+AUTH per msg p50" + LG, lat("lg_p2_reconnect", "median"), "ms", False, "≤ 5 ms",
         lambda v: v <= 5),
        ("P2' p99" + LG, lat("lg_p2_reconnect", "p99"), "ms", False, "", None),
        ("1,000 first logins (open IDLE)", lambda r: get(r, "fanout_first", "result", "open_s"), "s", False,
         "≤ 3 s", lambda v: v <= 3),
        # Issue 30 (bench/logins.py, chatrelay only: the classic stack has no /new).
        ("1,000 first logins, relay-issued (/new)" + LG, lambda r: get(r, "first_issued", "result", "open_s"), "s",
         False, "≤ 2 s", lambda v: v <= 2),
        ("1,000 first logins, user-chosen" + LG, lambda r: get(r, "first_chosen", "result", "open_s"), "s",
         False, "", None),
        ("restart storm: 1,000 relay-issued reconnect + IDLE" + LG, lambda r: get(r, "storm_issued", "result", "open_s"),
         "s", False, "≤ 2 s", lambda v: v <= 2),
        ("restart storm: 1,000 user-chosen reconnect + IDLE" + LG, lambda r: get(r, "storm_chosen", "result", "open_s"),
         "s", False, "", None),
        ("P3 4 KB 8×100 accepted", lambda r: get(r, "p3", "result", "accepted_msgs_per_s"), "msg/s", True,
         "≥ 2,800", lambda v: v >= 2800),
        ("P3 4 KB 8×100 accepted" + LG, lambda r: get(r, "lg_p3", "result", "accepted_msgs_per_s"), "msg/s", True,
         "≥ 2,800", lambda v: v >= 2800),
        ("P3 4 KB 8×100 all visible" + LG, lambda r: get(r, "lg_p3", "result", "delivered_msgs_per_s"), "msg/s",
         True, "", None),
        ("P3 4 KB 64×100 accepted" + LG, lambda r: get(r, "lg_p3_64", "result", "accepted_msgs_per_s"), "msg/s",
         True, "", None),
        ("P3 4 KB 8×100, 1,100 in each mailbox", lambda r: get(r, "p3_full", "result", "accepted_msgs_per_s"),
         "msg/s", True, "≥ 95% of P3", None),
        ("P3' 1 MB 4×25 accepted", lambda r: get(r, "p3_1m", "result", "accepted_msgs_per_s"), "msg/s", True,
         "≥ 300", lambda v: v >= 300),
        ("P3' 1 MB 4×25 accepted" + LG, lambda r: get(r, "lg_p3_1m", "result", "accepted_msgs_per_s"), "msg/s",
         True, "≥ 300", lambda v: v >= 300),
        # The first fanout opens 1,000 connections on a server that never had them (the second
        # one reuses memory the first freed, so its delta understates).
        ("P4 RSS per IDLE TLS conn (1,000, first open)", lambda r: get(r, "fanout_first", "result", "rss_kib_per_conn"),
         "KiB", False, "≤ 25 KiB", lambda v: v <= 25),
        ("P4 PSS per IDLE TLS conn (first open)", lambda r: get(r, "fanout_first", "result", "pss_kib_per_conn"), "KiB",
         False, "", None),
        ("P4 RSS per conn, second open", lambda r: get(r, "fanout", "result", "rss_kib_per_conn"), "KiB", False, "", None),
        (f"P4 RSS per conn after {HIBERNATE_WAIT:.0f} s", lambda r: get(r, "fanout", "result", "rss_kib_per_conn_after_wait"),
         "KiB", False, "", None),
        ("P4 time to open 1,000 (accounts exist)", lambda r: get(r, "fanout", "result", "open_s"), "s", False,
         "≤ 2 s", lambda v: v <= 2),
        ("P4 delivery p99 with 1,000 idle", lambda r: get(r, "fanout", "result", "latency_under_load", "fetched_ms", "p99"),
         "ms", False, "(≤ 10 ms at 10,000)", None),
        (f"{lgn} IDLE, first open incl. new logins" + LG, fan("lg_fanout_first", "open_s"), "s", False, "", None,
         lg_conns("lg_fanout_first")),
        (f"P4 RSS per IDLE TLS conn ({lgn}, first open)" + LG, fan("lg_fanout_first", "rss_kib_per_conn"), "KiB",
         False, "≤ 25 KiB", lambda v: v <= 25, lg_conns("lg_fanout_first")),
        (f"P4 PSS per IDLE TLS conn ({lgn}, first open)" + LG, fan("lg_fanout_first", "pss_kib_per_conn"), "KiB",
         False, "", None, lg_conns("lg_fanout_first")),
        (f"P4 time to open {lgn} (accounts exist)" + LG, fan("lg_fanout", "open_s"), "s", False, "", None,
         lg_conns("lg_fanout")),
        (f"P4 delivery p50 with {lgn} idle" + LG, fan("lg_fanout", "latency_under_load", "fetched_ms", "median"),
         "ms", False, "", None, lg_conns("lg_fanout")),
        (f"P4 delivery p99 with {lgn} idle" + LG, fan("lg_fanout", "latency_under_load", "fetched_ms", "p99"),
         "ms", False, "≤ 10 ms" if LG_IDLE_CONNS >= 10000 else "(≤ 10 ms at 10,000)",
         (lambda v: v <= 10) if LG_IDLE_CONNS >= 10000 else None, lg_conns("lg_fanout")),
        ("P5 RSS at rest", lambda r: get(r, "rss_rest", "result", "rss_mib"), "MiB", False, "≤ 15 MiB",
         lambda v: v <= 15),
        ("P5 processes", lambda r: get(r, "rss_rest", "result", "procs"), "", False, "", None),
        ("P5 RSS after the load", lambda r: get(r, "rss_after", "result", "rss_mib"), "MiB", False,
         "≤ 1.2× at rest", None),
        ("P5 cold start (exec → port open, keys exist)", lambda r: r.get("cold_start_ms"), "ms", False, "≤ 200 ms",
         lambda v: v <= 200),
    ]


def num(v):
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def table(a_path, b_path):
    global LG_IDLE_CONNS
    with open(a_path) as f:
        a = json.load(f)
    with open(b_path) as f:
        b = json.load(f)
    # Row labels name the connection count chatrelay's run asked for.
    LG_IDLE_CONNS = a.get("loadgen_idle_conns") or b.get("loadgen_idle_conns") or LG_IDLE_CONNS
    out = [f"| figure | {a['name']} | {b['name']} | ratio (×better) | target | met |",
           "|---|---:|---:|---:|---|---|"]
    for label, ex, unit, higher, target, check, *note in rows():
        va, vb = ex(a), ex(b)
        if va is None and vb is None and LG in label:
            continue  # no loadgen run in either file
        ratio = "—"
        if va and vb and va > 0 and vb > 0:
            ratio = f"{(va / vb if higher else vb / va):.1f}×"
        met = ""
        if va is not None and check is not None:
            met = "yes" if check(va) else "**no**"
        if label.startswith("P3 4 KB 8×100, 1,100") and va and ex(a) is not None:
            p3 = get(a, "p3", "result", "accepted_msgs_per_s")
            if p3:
                met = f"{'yes' if va >= 0.95 * p3 else '**no**'} ({100 * va / p3:.0f}%)"
        if label.startswith("P5 RSS after") and va:
            rest = get(a, "rss_rest", "result", "rss_mib")
            if rest:
                met = f"{'yes' if va <= 1.2 * rest else '**no**'} ({va / rest:.2f}×)"
        u = f" {unit}" if unit else ""
        na, nb = (note[0](a), note[0](b)) if note else ("", "")
        out.append(f"| {label} | {num(va)}{u}{na} | {num(vb)}{u}{nb} | {ratio} | {target} | {met} |")
    out.append("")
    out.append("Client/server CPU during the step, % of one core (2 cores total):")
    out.append("")
    out.append(f"| step | {a['name']} client/server % | {b['name']} client/server % |")
    out.append("|---|---:|---:|")
    for key in [s[0] for s in steps() + lg_steps()] + ["first_issued", "first_chosen", "storm_issued",
                                                       "storm_chosen", "p1", "p1_5m", "p1_group"]:
        if key.startswith("lg_") and key not in a.get("steps", {}) and key not in b.get("steps", {}):
            continue
        out.append(f"| {key} | {cpu_note(a, key)} | {cpu_note(b, key)} |")
    for r in (a, b):
        if get(r, "p1", "note"):
            out.append(f"\nP1 {r['name']}: {get(r, 'p1', 'note')}")
    print("\n".join(out))


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "run":
        name, out = sys.argv[2], sys.argv[3]
        rest = sys.argv[4:]
        cold = None
        if rest[:1] == ["--cold-start-ms"]:
            cold = float(rest[1])
            rest = rest[2:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        run(name, out, rest, cold)
    elif len(sys.argv) >= 4 and sys.argv[1] == "p1":
        rest = sys.argv[4:]
        run_p1(sys.argv[2], sys.argv[3], rest[1:] if rest[:1] == ["--"] else rest)
    elif len(sys.argv) == 4 and sys.argv[1] == "table":
        table(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
