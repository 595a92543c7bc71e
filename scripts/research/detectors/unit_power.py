"""Exact replicas (same LCG draws) of the detectors' power unit tests:
visit_decline `declines_fire_once_they_have_lasted_and_the_evidence_is_there`,
open_rate_drop `drops_lasting_three_to_eight_weeks_fire_once_the_evidence_is_there`
and `readers_who_stop_for_seven_weeks_are_caught_whatever_their_history`."""
import math
import numpy as np
from pops import Lcg

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS

def wk(d):
    return int(d * DAY_MS) // WEEK_MS   # day(d) relative to T0 (a Monday), truncated as Rust does

def visit_cells():
    rng = Lcg(17)
    cells = []
    for per_day in [0.2, 0.35, 0.5, 0.65, 0.8]:
        rate = per_day * 7.0
        for to in [0.0, 0.25]:
            for weeks in [3, 5, 8]:
                pre, n = 30, 40
                W = pre + 4 + weeks
                C = np.zeros((n, W + 1), np.int64)
                for m in range(n):
                    C[m, 0] += 1
                    for w in range(W):
                        lam = rate if w < pre else (0.6 * rate if w < pre + 4 else rate * to)
                        C[m, w] += rng.poisson(lam)
                cells.append(dict(kind="visits", c=C, first_seen=np.zeros(n), eval_from=pre + 4,
                                  eval_to=pre + 4 + weeks, rate=per_day, to=to, weeks=weeks))
    return cells

def open_cells():
    rng = Lcg(15)
    cells = []
    for rate in [0.2, 0.35, 0.5, 0.65, 0.8]:
        for to in [0.0, 0.25]:
            for weeks in [3, 5, 8]:
                pre, n = 30, 40
                W = pre + 4 + weeks
                S = np.zeros((n, W + 1), np.int64); O = np.zeros((n, W + 1), np.int64)
                for m in range(n):
                    for w in range(W):
                        p = rate if w < pre else (0.6 * rate if w < pre + 4 else rate * to)
                        for s in range(3):
                            S[m, w] += 1
                            if rng.next() < p:
                                O[m, w] += 1
                cells.append(dict(kind="opens", s=S, o=O, first_seen=np.full(n, 0.5 / 7), eval_from=pre + 4,
                                  eval_to=pre + 4 + weeks, rate=rate, to=to, weeks=weeks))
    return cells

def seven_week_stops():
    """Returns [(history_weeks, bar, population)] with eval_from == eval_to == the week judged
    (members differ in it, so a per-member 'cur' array is given)."""
    rng = Lcg(99)
    out = []
    for hw, bar in [(16.0, 0.97), (21.0, 0.99), (30.0, 0.99)]:
        n = 2000
        W = int(hw) + 3
        S = np.zeros((n, W), np.int64); O = np.zeros((n, W), np.int64)
        cur = np.zeros(n, np.int64); fs = np.zeros(n)
        for i in range(n):
            rate = 0.5 + 0.3 * (i / n)
            end = hw * 7.0 + rng.next() * 7.0
            d = rng.next() * 2.0
            first = d
            while d < end:
                S[i, wk(d)] += 1
                op = d + rng.next() * 1.5
                if d < end - 49.0 and rng.next() < rate and op < end:
                    O[i, wk(op)] += 1
                d += 7.0 / 3.0
            cur[i] = wk(end)
            fs[i] = int(first * DAY_MS) / WEEK_MS
        out.append((hw, bar, dict(kind="opens", s=S, o=O, first_seen=fs, cur=cur)))
    return out
