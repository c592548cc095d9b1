#!/usr/bin/env python3
"""Replaces entries of a shipped profile by those of a partial tuning run.

usage: merge_profile.py SHIPPED PARTIAL NOTE

pagedjit-tune --only writes a profile holding only the problems it tuned.
This puts each of its entries in place of the SHIPPED entry with the same
bucket (or appends it), keeps the file's one-entry-per-line layout, and adds
NOTE to its "about". Entries are copied whole: a config's optional keys
(chunk_tokens, v_dims, work_waves) come with it, and an entry replaced by one
without work_waves loses its old value. Check the result with
pagedjit-tune --check.
"""
import json
import sys


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    shipped_path, partial_path, note = sys.argv[1:]
    with open(partial_path, encoding="utf-8") as f:
        new = json.load(f)["entries"]
    with open(shipped_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    replaced = set()
    last_entry = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith('"about":'):
            about = json.loads("{" + stripped.rstrip(",") + "}")["about"]
            lines[i] = line[: len(line) - len(stripped)] + '"about": ' + json.dumps(about + "; " + note) + ","
        if not stripped.startswith('{"bucket":'):
            continue
        last_entry = i
        comma = stripped.endswith(",")
        entry = json.loads(stripped.rstrip(","))
        for j, e in enumerate(new):
            if e["bucket"] == entry["bucket"]:
                indent = line[: len(line) - len(stripped)]
                lines[i] = indent + json.dumps(e, separators=(",", ":")) + ("," if comma else "")
                replaced.add(j)
    if last_entry is None:
        print(f"{shipped_path}: no entries found", file=sys.stderr)
        return 1
    indent = lines[last_entry][: len(lines[last_entry]) - len(lines[last_entry].lstrip())]
    added = [indent + json.dumps(e, separators=(",", ":")) for j, e in enumerate(new) if j not in replaced]
    if added:
        lines[last_entry] += ","
        lines[last_entry + 1 : last_entry + 1] = [a + "," for a in added[:-1]] + added[-1:]
    with open(shipped_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"{shipped_path}: {len(replaced)} entries replaced, {len(added)} added")
    return 0


if __name__ == "__main__":
    sys.exit(main())
