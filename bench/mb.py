#!/usr/bin/env python3
"""Run the shared yardstick mailbench.py unchanged, with one addition: latency
distributions also carry p99 (mailbench itself reports min/median/p90/max).

Usage: mb.py [mailbench arguments...]; BENCH_DIR points at the folder holding
mailbench.py (default ../shared/bench relative to the repository).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.environ.get("BENCH_DIR") or os.path.join(HERE, "..", "..", "shared", "bench")
sys.path.insert(0, os.path.abspath(BENCH_DIR))

import mailbench  # noqa: E402

_dist = mailbench.dist


def dist_with_p99(values):
    d = _dist(values)
    d["p99"] = mailbench.pct(values, 99)
    return d


mailbench.dist = dist_with_p99

if __name__ == "__main__":
    mailbench.main(sys.argv[1:])
