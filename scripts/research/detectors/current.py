"""The shipped detectors, emulated on weekly counts (numba).

visit_decline: src/detect/visit_decline.rs (`start_at`, `decline_from`)
open_rate_drop: src/detect/open_rate_drop.rs (`best_drop`, `WeekLlr`)

Arrays: c[w] (visits), s[w]/o[w] (sends/opens) for absolute weeks w; the
member was first seen at fractional week `fs`; `cur` is the week being
judged (weeks < cur complete).  Both return the best log-likelihood ratio
(-inf where the member cannot be judged).
"""
import math

import numpy as np
from numba import njit

NEG = -np.inf


@njit(cache=True)
def vd_llr(c, fs, cur, window=16, min_recent=6, min_base_weeks=8, min_expected=6.0,
           ratio=0.25, h=0.04, margin=1.0):
    first_full = int(math.floor(fs)) + 1
    frm = max(cur - window, first_full)
    last_start = cur - max(min_recent, 1)
    ln_ratio = math.log(ratio)
    ln_not_away = math.log(1.0 - h)
    visits = 0
    zero = 0
    busy = 0
    best = NEG
    # cumulative visits before week k
    base_all = 0
    for w in range(0, min(frm, c.shape[0])):
        base_all += c[w]
    # base(k) = base_all + sum c[frm..k-1]
    pref = np.zeros(cur - frm + 1, np.int64)
    acc = base_all
    for k in range(frm, cur + 1):
        pref[k - frm] = acc
        if k < c.shape[0]:
            acc += c[k]
    for k in range(cur - 1, frm - 1, -1):
        ck = c[k] if k < c.shape[0] else 0
        visits += ck
        if ck == 0:
            zero += 1
        else:
            busy += 1
        if k > last_start:
            continue
        if k - first_full < min_base_weeks:
            continue
        base = float(pref[k - frm])
        known = k - fs
        if known <= 0.0:
            continue
        l0 = max(base - margin * math.sqrt(base), 0.0) / known
        if l0 <= 0.0:
            continue
        rate = base / known
        weeks = cur - k
        if rate * weeks < min_expected:
            continue
        l1 = ratio * l0
        zw = -l1 - math.log(h + (1.0 - h) * math.exp(-l0))
        bw = (l0 - l1) - ln_not_away
        llr = zero * zw + visits * ln_ratio + busy * bw
        if llr > best:
            best = llr
    return best


@njit(cache=True)
def ord_llr(s, o, fs, cur, window=16, min_recent=4, min_base_weeks=8, min_base_sends=16,
            min_rate=0.3, ratio=0.25, h=0.08, margin=0.5):
    first_full = int(math.floor(fs)) + 1
    frm = max(cur - window, first_full)
    last_start = cur - max(min_recent, 1)
    best = NEG
    ln_not_away = math.log(1.0 - h)
    for k in range(frm, last_start + 1):
        if k - first_full < min_base_weeks:
            continue
        bs = 0
        bo = 0
        for w in range(0, k):
            bs += s[w]
            bo += o[w]
        bo = min(bo, bs)
        rs = 0
        ro = 0
        for w in range(k, cur):
            rs += s[w]
            ro += o[w]
        ro = min(ro, rs)
        if bs < min_base_sends or rs == 0:
            continue
        rate = bo / bs
        if rate < min_rate:
            continue
        n = bs + 4.0
        adj = (bo + 2.0) / n
        se = math.sqrt(adj * (1.0 - adj) / n)
        p0 = min(adj - margin * se, rate)
        if p0 <= 0.0 or p0 >= 1.0:
            continue
        p1 = min(ratio * p0, ro / rs)
        llr = 0.0
        for w in range(k, cur):
            sw = s[w]
            if sw == 0:
                continue
            ow = min(o[w], sw)
            if ow == 0:
                llr += sw * math.log(1.0 - p1) - math.log(h + (1.0 - h) * (1.0 - p0) ** sw)
            else:
                llr += ow * math.log(p1 / p0) + (sw - ow) * math.log((1.0 - p1) / (1.0 - p0)) \
                    - ln_not_away
        if llr > best:
            best = llr
    return best


@njit(cache=True)
def first_fire_vd(C, FS, e_from, e_to, threshold=6.0, min_recent=6, h=0.04, margin=1.0,
                  ratio=0.25):
    n = C.shape[0]
    out = np.full(n, -1, np.int64)
    for i in range(n):
        for cur in range(e_from, e_to + 1):
            if vd_llr(C[i], FS[i], cur, 16, min_recent, 8, 6.0, ratio, h, margin) >= threshold:
                out[i] = cur
                break
    return out


@njit(cache=True)
def first_fire_ord(S, O, FS, e_from, e_to, threshold=7.0, min_recent=4, h=0.08, margin=0.5,
                   min_rate=0.3, ratio=0.25):
    n = S.shape[0]
    out = np.full(n, -1, np.int64)
    for i in range(n):
        for cur in range(e_from, e_to + 1):
            if ord_llr(S[i], O[i], FS[i], cur, 16, min_recent, 8, 16, min_rate, ratio, h,
                       margin) >= threshold:
                out[i] = cur
                break
    return out
