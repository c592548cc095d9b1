#!/usr/bin/env python3
"""The table of docs/performance.md, "Specialization", from the runs of
scripts/specialize_sweep.sh: DIR/<schedule>-<flavour>-r<round>.json.

Per schedule (auto: the engine's default, host: --host-schedule), per case:
the median over rounds of the unspecialized time (none, ms) and, per
flavour, the gain 100 * (1 - flavour ms / none ms) in percent (positive:
faster). '=' marks a flavour whose decode kernel is the unspecialized one
(nothing was compiled in: the split count under the device schedule), so its
gain is noise: a gauge for the others. '*' marks a gain of 1% or more in
every round (each round's flavour run against the same round's none run).
A failed check or an error shows as FAIL / ERR.
Usage: compare_specialize.py DIR
"""
import glob
import json
import os
import re
import statistics
import sys

FLAVOURS = ["page", "group", "splits", "page,group,splits"]


def load(path):
    with open(path) as f:
        run = json.load(f)
    rows = {}
    for c in run.get("cases", []):
        ok = c.get("error") is None and c.get("check", {}).get("pass", False)
        rows[c["name"]] = {
            "ms": c.get("time_ms"),
            "ok": ok,
            "error": c.get("error"),
            "kernel": (c.get("launch") or {}).get("decode_kernel"),
        }
    return run.get("gpu", {}).get("name", "?"), rows


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    runs = {}  # (schedule, flavour) -> {round: rows}
    gpus = set()
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
        m = re.fullmatch(r"(auto|host)-(.+)-r(\d+)\.json", os.path.basename(path))
        if not m:
            continue
        gpu, rows = load(path)
        gpus.add(gpu)
        runs.setdefault((m.group(1), m.group(2)), {})[int(m.group(3))] = rows
    if not runs:
        print(f"compare_specialize.py: no <schedule>-<flavour>-r<round>.json in {sys.argv[1]}", file=sys.stderr)
        return 1
    print(f"GPU: {', '.join(sorted(gpus))}")
    status = 0
    for sched in ("auto", "host"):
        base = runs.get((sched, "none"))
        if not base:
            continue
        flavours = [f for f in FLAVOURS if (sched, f) in runs]
        print(f"\n{sched} schedule ({'default engine' if sched == 'auto' else '--host-schedule'}), "
              f"rounds {sorted(base)}; gain % = 100 * (1 - ms / none ms)\n")
        print("| case | none ms | " + " | ".join(flavours) + " |")
        print("|---|---:|" + "---:|" * len(flavours))
        names = list(next(iter(base.values())).keys())
        for name in names:
            b = [r[name] for r in base.values() if name in r]
            if not all(x["ok"] for x in b):
                status = 1
                print(f"| {name} | {'ERR' if any(x['error'] for x in b) else 'FAIL'} |" + " |" * len(flavours))
                continue
            b_ms = statistics.median(x["ms"] for x in b)
            cells = []
            for f in flavours:
                rounds = runs[(sched, f)]
                got = [(rd, r[name]) for rd, r in rounds.items() if name in r]
                if not got:
                    cells.append("-")
                    continue
                if not all(x["ok"] for _, x in got):
                    status = 1
                    cells.append("ERR" if any(x["error"] for _, x in got) else "FAIL")
                    continue
                gain = 100 * (1 - statistics.median(x["ms"] for _, x in got) / b_ms)
                same = all(x["kernel"] == base[rd][name]["kernel"] for rd, x in got if rd in base and name in base[rd])
                every = all(rd in base and name in base[rd] and 100 * (1 - x["ms"] / base[rd][name]["ms"]) >= 1
                            for rd, x in got)
                cells.append(f"{gain:+.1f}{' =' if same else ''}{' *' if every and not same else ''}")
            print(f"| {name} | {b_ms:.4f} | " + " | ".join(cells) + " |")
    return status


if __name__ == "__main__":
    sys.exit(main())
