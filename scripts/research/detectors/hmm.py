"""Candidate tests: a null in which breaks are contiguous blocks (a small
hidden Markov model), against a decline that starts at week k and lasts to
now.  For every start k in the window (as the shipped detectors do):

  lam0 (p0)  = the member's rate from everything before k, `margin` SE low
  H0         = weeks frm..cur-1 from the HMM: state N (normal, rate lam0) or
               B1..BL (week j of a break, nothing happens; a break lasts
               j weeks with probability dur[j-1]; N -> B1 with probability q)
  H1_k       = H0 for weeks frm..k-1, then every week k..cur-1 at rate
               r*lam0 (r = ratio, or `capped`: min(ratio, observed/expected))
  LLR_k      = ln P(x | H1_k) - ln P(x | H0)
             = sum_{w>=k} ln f1(x_w) - ln P(x_k..x_{cur-1} | x_frm..x_{k-1}, H0)

The best k wins.  Optional extra rules (0 = off):
  last_low:  the last `last_low` complete weeks must each be at most
             `last_low_frac` of lam0 (visits) / have no open (opens)
"""
import math

import numpy as np
from numba import njit

NEG = -np.inf


@njit(cache=True)
def _hazards(dur):
    L = dur.shape[0]
    haz = np.zeros(L)
    surv = 1.0
    for j in range(L):
        # P(len > j+1 | len >= j+1)
        nxt = surv - dur[j]
        haz[j] = nxt / surv if surv > 1e-300 else 0.0
        surv = nxt if nxt > 0 else 0.0
    return haz


@njit(cache=True)
def _init(q, dur):
    L = dur.shape[0]
    pi = np.zeros(L + 1)
    pi[0] = 1.0
    surv = 1.0
    for j in range(L):
        pi[j + 1] = q * surv
        surv -= dur[j]
    pi /= pi.sum()
    return pi


@njit(cache=True)
def _step(a, e_n, e_b, q, haz):
    """One forward step: a (filtered, sums to 1) -> new unnormalised."""
    L = haz.shape[0]
    new = np.zeros(L + 1)
    # into N: from N (1-q), from Bj (1-haz_j)
    into_n = a[0] * (1.0 - q)
    for j in range(L):
        into_n += a[j + 1] * (1.0 - haz[j])
    new[0] = into_n * e_n
    new[1] = a[0] * q * e_b
    for j in range(1, L):
        new[j + 1] = a[j] * haz[j - 1] * e_b
    return new


@njit(cache=True)
def vd_hmm_llr(c, fs, cur, q, dur, ratio, capped, margin, min_recent, min_expected,
               threshold_unused=0.0, window=16, min_base_weeks=8, eps=0.0, last_low=0,
               last_low_frac=0.5, init_stationary=True):
    first_full = int(math.floor(fs)) + 1
    frm = max(cur - window, first_full)
    last_start = cur - max(min_recent, 1)
    haz = _hazards(dur)
    pi = _init(q, dur) if init_stationary else np.eye(dur.shape[0] + 1)[0]
    nw = c.shape[0]
    best = NEG
    base_all = 0
    for w in range(0, min(frm, nw)):
        base_all += c[w]
    base = base_all
    for k in range(frm, last_start + 1):
        if k > frm:
            base += c[k - 1] if k - 1 < nw else 0
        if k - first_full < min_base_weeks:
            continue
        known = k - fs
        if known <= 0:
            continue
        bf = float(base)
        l0 = max(bf - margin * math.sqrt(bf), 0.0) / known
        if l0 <= 0:
            continue
        rate = bf / known
        weeks = cur - k
        if rate * weeks < min_expected:
            continue
        # recent visits
        rv = 0
        for w in range(k, cur):
            rv += c[w] if w < nw else 0
        r = ratio
        if capped:
            obs = rv / (l0 * weeks)
            if obs < r:
                r = max(obs, 1e-3)
        l1 = r * l0
        if last_low > 0:
            ok = True
            for w in range(cur - last_low, cur):
                cw = c[w] if w < nw else 0
                if cw > last_low_frac * l0:
                    ok = False
            if not ok:
                continue
        # H1 decline part: sum ln Pois(c; l1) (c! dropped everywhere)
        h1 = rv * math.log(l1) - l1 * weeks
        # H0 forward over frm..cur-1
        a = pi.copy()
        ll = 0.0
        ll_pre = 0.0
        ln_l0 = math.log(l0)
        eb_pos = eps * l0
        for w in range(frm, cur):
            if w == k:
                ll_pre = ll
            cw = c[w] if w < nw else 0
            e_n = math.exp(cw * ln_l0 - l0)
            if eps > 0:
                e_b = math.exp(cw * math.log(eb_pos) - eb_pos)
            else:
                e_b = 1.0 if cw == 0 else 0.0
            new = _step(a, e_n, e_b, q, haz)
            s = new.sum()
            ll += math.log(s)
            a = new / s
        llr = h1 - (ll - ll_pre)
        if llr > best:
            best = llr
    return best


@njit(cache=True)
def ord_hmm_llr(s, o, fs, cur, q, dur, ratio, capped, margin, min_recent, min_rate,
                window=16, min_base_weeks=8, min_base_sends=16, last_low=0,
                init_stationary=True):
    first_full = int(math.floor(fs)) + 1
    frm = max(cur - window, first_full)
    last_start = cur - max(min_recent, 1)
    haz = _hazards(dur)
    pi = _init(q, dur) if init_stationary else np.eye(dur.shape[0] + 1)[0]
    best = NEG
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
            ro += min(o[w], s[w])
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
        if capped:
            p1 = min(ratio * p0, ro / rs)
        else:
            p1 = ratio * p0
        if last_low > 0:
            ok = True
            for w in range(cur - last_low, cur):
                if o[w] > 0:
                    ok = False
            if not ok:
                continue
        # H1 part
        h1 = 0.0
        for w in range(k, cur):
            sw = s[w]
            ow = min(o[w], sw)
            if ow > 0:
                h1 += ow * math.log(p1)
            if sw - ow > 0:
                h1 += (sw - ow) * math.log(1.0 - p1)
        a = pi.copy()
        ll = 0.0
        ll_pre = 0.0
        lp0 = math.log(p0)
        lq0 = math.log(1.0 - p0)
        for w in range(frm, cur):
            if w == k:
                ll_pre = ll
            sw = s[w]
            ow = min(o[w], sw)
            e_n = math.exp(ow * lp0 + (sw - ow) * lq0)
            e_b = 1.0 if ow == 0 else 0.0
            new = _step(a, e_n, e_b, q, haz)
            t = new.sum()
            ll += math.log(t)
            a = new / t
        llr = h1 - (ll - ll_pre)
        if llr > best:
            best = llr
    return best


@njit(cache=True)
def max_llr_series_vd(C, FS, e_from, e_to, q, dur, ratio, capped, margin, min_recent,
                      min_expected, eps, last_low, last_low_frac):
    """(N, e_to-e_from+1) best LLR at every evaluation week."""
    n = C.shape[0]
    out = np.full((n, e_to - e_from + 1), NEG)
    for i in range(n):
        for cur in range(e_from, e_to + 1):
            out[i, cur - e_from] = vd_hmm_llr(C[i], FS[i], cur, q, dur, ratio, capped, margin,
                                              min_recent, min_expected, 0.0, 16, 8, eps,
                                              last_low, last_low_frac, True)
    return out


@njit(cache=True)
def max_llr_series_ord(S, O, FS, e_from, e_to, q, dur, ratio, capped, margin, min_recent,
                       min_rate, last_low):
    n = S.shape[0]
    out = np.full((n, e_to - e_from + 1), NEG)
    for i in range(n):
        for cur in range(e_from, e_to + 1):
            out[i, cur - e_from] = ord_hmm_llr(S[i], O[i], FS[i], cur, q, dur, ratio, capped,
                                               margin, min_recent, min_rate, 16, 8, 16,
                                               last_low, True)
    return out
