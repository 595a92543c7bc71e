"""Reproduce the shipped detectors' figures (unit tests exactly, scenario statistically)."""
import sys, time
import numpy as np
import pops
from current import first_fire_vd, first_fire_ord

def run(p, det, **kw):
    if p["kind"] == "visits":
        return first_fire_vd(p["c"], p["first_seen"], p["eval_from"], p["eval_to"], **kw)
    return first_fire_ord(p["s"], p["o"], p["first_seen"], p["eval_from"], p["eval_to"], **kw)

t = time.time()
v = pops.unit_steady_visitors()
f = run(v, "vd"); print("unit steady visitors w/ breaks: vd fired", (f >= 0).sum(), "of 2000 (Rust: 30)")
v7 = run(v, "vd", threshold=7.0); print("  threshold 7:", (v7 >= 0).sum(), "(doc: 0.65% = 13)")
nb = pops.unit_steady_visitors_nobreak30()
print("unit steady visitors no breaks 30w: vd fired", (run(nb, "vd") >= 0).sum(), "(Rust: 5)")
r = pops.unit_steady_readers()
print("unit steady readers w/ breaks: ord fired", (run(r, "ord") >= 0).sum(), "of 2000 (Rust: 17)")
print("time", time.time() - t)
for seed in (7, 11, 23, 1, 2):
    sv = pops.scenario_visits(4000, seed)
    fv = run(sv, "vd")
    so = pops.scenario_opens(4000, seed)
    fo = run(so, "ord")
    ds = sv["decline_start"]
    print(f"scenario seed {seed}: visits recall {(fv>=0).mean():.4f}  opens recall {(fo>=0).mean():.4f}"
          f"  vd fired before decline {(fv[fv>=0] < ds).sum()}  delay(weeks after start) vd {np.bincount(fv[fv>=0]-ds+1 if False else np.maximum(fv[fv>=0]-ds,0))}"
          f" ord {np.bincount(np.maximum(fo[fo>=0]-ds,0))}")
