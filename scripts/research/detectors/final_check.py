"""Everything measured for one test: python final_check.py visits|opens 'CFG-JSON' THRESHOLD
(CFG {"type":"cur"} is the shipped detector)."""
import sys, json, time
import numpy as np
import pops, unit_power
from sweep import series, P

def fire_matrix(p, cfg, th):
    return series(p, cfg) >= th

def anyf(p, cfg, th):
    return fire_matrix(p, cfg, th).any(1)

def main(kind, cfg, th):
    t0 = time.time()
    V = kind == "visits"
    print(f"== {kind} {json.dumps(cfg)} threshold {th}")
    if V:
        q = [("unit seed 42 (exact)", pops.unit_steady_visitors())] + [(f"np {s}", P("np_steady_visitors", 4000, s)) for s in (101, 102, 103)]
    else:
        q = [("unit seed 42 (exact)", pops.unit_steady_readers())] + [(f"np {s}", P("np_steady_readers", 4000, s)) for s in (101, 102, 103)]
    tot = 0; n = 0
    for name, p in q:
        f = anyf(p, cfg, th); tot += f.sum(); n += len(f)
        print(f"  steady w/ two 2-week breaks, {name}: {f.sum()}/{len(f)} = {100 * f.mean():.2f}%")
    print(f"  POOLED steady w/ breaks: {tot}/{n} = {100 * tot / n:.2f}%")
    if V:
        extra = [("breaks of 1-3 weeks", pops.np_steady_visitors_var(4000, 104, "var")),
                 ("14-day breaks from any weekday", pops.np_steady_visitors_var(4000, 105, "mis")),
                 ("no breaks (unit replica, 30 wk)", pops.unit_steady_visitors_nobreak30()),
                 ("no breaks, 53 wk", pops.np_steady_visitors(4000, 106, breaks="none"))]
        sq = [("scenario steady visits U(1,4)/wk", pops.scenario_quiet_visits(4000, 107)),
              ("scenario lowfreq visits 0.3/wk", pops.scenario_quiet_visits(4000, 108, 0.3))]
    else:
        extra = [("2 sends/wk", pops.np_steady_readers(4000, 104, sends=2)),
                 ("2-3 sends/wk", pops.np_steady_readers(4000, 105, sends="2-3")),
                 ("breaks of 1-3 weeks", pops.np_steady_readers_var(4000, 106, "var")),
                 ("14-day breaks from any weekday", pops.np_steady_readers_var(4000, 107, "mis")),
                 ("no breaks, 53 wk", pops.np_steady_readers(4000, 108, breaks="none"))]
        sq = [("scenario steady/daily readers 2/wk", pops.scenario_quiet_opens(4000, 109)),
              ("scenario lowfreq readers 1/wk x0.5", pops.scenario_quiet_opens(4000, 110, 1, 0.5))]
    for name, p in extra + sq:
        f = anyf(p, cfg, th)
        print(f"  {name}: {100 * f.mean():.2f}%")
    rec = []
    delays = []
    for s in (7, 11, 23, 1, 2):
        p = P("scenario_visits" if V else "scenario_opens", 4000, s)
        f = fire_matrix(p, cfg, th)
        hit = f.any(1)
        first = np.where(hit, f.argmax(1) + p["eval_from"], -1)
        pre = ((first >= 0) & (first < p["decline_start"])).sum()
        rec.append(hit.mean())
        delays.append(first[first >= p["decline_start"]] - p["decline_start"])
        print(f"  scenario seed {s}: recall {hit.mean():.4f} ({(~hit).sum()} missed of 4000; {pre} fired before the decline)")
    d = np.concatenate(delays)
    print(f"  scenario recall mean {np.mean(rec):.4f}; P(<=1 miss of 163) ~ {np.exp(-163 * (1 - np.mean(rec))) * (1 + 163 * (1 - np.mean(rec))):.2f}")
    print(f"  delay (complete decline weeks when fired): mean {d.mean():.2f}, hist 0..6+ {np.bincount(np.clip(d, 0, 6), minlength=7)}")
    if V:
        cells = unit_power.visit_cells()
        print("  unit power table (rate/day, drop to, weeks: fired/40):")
        print("   ", " ".join(f"{c['rate']}/{c['to']}/{c['weeks']}:{anyf(c, cfg, th).sum()}" for c in cells))
    else:
        cells = unit_power.open_cells()
        print("  unit power table (rate, drop to, weeks: fired/40):")
        print("   ", " ".join(f"{c['rate']}/{c['to']}/{c['weeks']}:{anyf(c, cfg, th).sum()}" for c in cells))
        for hw, bar, p in unit_power.seven_week_stops():
            fired = 0
            for cur in np.unique(p["cur"]):
                sel = p["cur"] == cur
                qq = dict(kind="opens", s=p["s"][sel], o=p["o"][sel], first_seen=p["first_seen"][sel], eval_from=int(cur), eval_to=int(cur))
                fired += anyf(qq, cfg, th).sum()
            print(f"  unit seven-week stop after {hw:.0f} weeks: recall {fired / 2000:.3f} (bar {bar})")
    print(f"  ({time.time() - t0:.0f}s)")

if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]))
