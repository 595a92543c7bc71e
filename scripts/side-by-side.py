#!/usr/bin/env python3
"""Runs commands (usually two) at the same time and reports each one's CPU time per
thread name, from /proc/<pid>/task/*/stat (Linux).

Why: on a shared VM the speed of the machine drifts (the floor program gave
1.30M to 1.82M events/s on one file within an hour), so two builds timed one
after the other can differ by more than the change under test. Run side by
side, both see the same machine; the engine thread's CPU time is what the
other run's background work inflates least. Run each pair at least twice.

    scripts/side-by-side.py \\
        'A: churnwatch-old replay --quiet --input zipf.ndjson --output a.ndjson' \\
        'B: churnwatch-new replay --quiet --input zipf.ndjson --output b.ndjson'

Each argument is `LABEL: command` (split like a shell would, no shell
features). Prints one line per command: wall time, exit code, total CPU
seconds (exact) and CPU seconds by thread name (RocksDB's pools, `engine-N`, the main thread), largest first.
"""

import collections
import os
import shlex
import subprocess
import sys
import time


def cpu_by_thread(pid, seen):
    """Updates `seen` (tid -> (name, cpu seconds)) from /proc; a thread that
    has ended keeps its last reading."""
    hz = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1 : s.rindex(")")]
        fields = s[s.rindex(")") + 2 :].split()
        # utime and stime: fields 14 and 15 of stat(5), 12 and 13 here.
        seen[tid] = (name, (int(fields[11]) + int(fields[12])) / hz)


def main(argv):
    if not argv or any(":" not in a for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    runs = []
    for arg in argv:
        label, cmd = arg.split(":", 1)
        started = time.monotonic()
        proc = subprocess.Popen(shlex.split(cmd))
        runs.append({"label": label.strip(), "proc": proc, "started": started,
                     "seen": {}, "wall": None})
    while any(r["wall"] is None for r in runs):
        for r in runs:
            if r["wall"] is not None:
                continue
            cpu_by_thread(r["proc"].pid, r["seen"])
            # Reaped here rather than by Popen, for the exact CPU total
            # (the per-thread readings are up to one poll old).
            pid, status, usage = os.wait4(r["proc"].pid, os.WNOHANG)
            if pid != 0:
                r["wall"] = time.monotonic() - r["started"]
                r["code"] = os.waitstatus_to_exitcode(status)
                r["total"] = usage.ru_utime + usage.ru_stime
        time.sleep(0.2)
    failed = 0
    for r in runs:
        by_name = collections.defaultdict(float)
        for name, cpu in r["seen"].values():
            by_name[name] += cpu
        threads = ", ".join(
            f"{name} {cpu:.1f}" for name, cpu in sorted(by_name.items(), key=lambda x: -x[1])
        )
        code = r["code"]
        failed |= code != 0
        print(
            f"{r['label']}: wall {r['wall']:.1f} s, exit {code}, CPU {r['total']:.1f} s;"
            f" by thread: {threads}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
