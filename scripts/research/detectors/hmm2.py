"""General-HMM version of the candidate tests (see hmm.py for the idea).

The null is a Markov chain over states given by (A, pi, brk): A[i, j] the
transition probability i -> j, pi the distribution at the first tested
week, brk[s] = 1 where state s is a break (nothing happens), 0 where the
member acts at their rate.  Builders below make the chains tried.
"""
import math
import numpy as np
from numba import njit

NEG = -np.inf


def chain(q, dur, max_breaks=None, start_in_break=True):
    """Normal state N, break states B1..BL (dur[j-1] = P(break lasts j
    weeks)); N -> B1 with probability q.  max_breaks=1: after one break the
    chain stays in a normal state A (no second break in the window)."""
    L = len(dur)
    surv = [1.0]
    for d in dur:
        surv.append(surv[-1] - d)
    haz = [surv[j + 1] / surv[j] if surv[j] > 1e-12 else 0.0 for j in range(L)]
    if max_breaks is None:
        S = L + 1
        A = np.zeros((S, S))
        A[0, 0] = 1 - q; A[0, 1] = q
        for j in range(L):
            s = j + 1
            if j + 1 < L:
                A[s, s + 1] = haz[j]
            A[s, 0] += 1 - haz[j]
        brk = np.array([0] + [1] * L)
        pi = np.zeros(S); pi[0] = 1.0
        if start_in_break:
            for j in range(L):
                pi[j + 1] = q * surv[j]
        pi /= pi.sum()
        return A, pi, brk.astype(np.int64)
    # one break: N0 (before), B1..BL, N1 (after, absorbing)
    S = L + 2
    A = np.zeros((S, S))
    A[0, 0] = 1 - q; A[0, 1] = q
    for j in range(L):
        s = j + 1
        if j + 1 < L:
            A[s, s + 1] = haz[j]
        A[s, S - 1] += 1 - haz[j]
    A[S - 1, S - 1] = 1.0
    brk = np.array([0] + [1] * L + [0])
    pi = np.zeros(S); pi[0] = 1.0
    if start_in_break:
        for j in range(L):
            pi[j + 1] = q * surv[j]
    pi /= pi.sum()
    return A, pi, brk.astype(np.int64)


@njit(cache=True)
def _fwd(A, a, e_n, e_b, brk):
    S = a.shape[0]
    new = np.zeros(S)
    for i in range(S):
        if a[i] == 0.0:
            continue
        for j in range(S):
            new[j] += a[i] * A[i, j]
    for j in range(S):
        new[j] *= e_b if brk[j] else e_n
    return new


@njit(cache=True)
def _pois_cdf(c, lam):
    t = 0.0
    term = math.exp(-lam)
    for j in range(c + 1):
        if j > 0:
            term *= lam / j
        t += term
    return t


@njit(cache=True)
def _partial_week_pois(c, a, b):
    """Mean of lam^c e^-lam over lam uniform in [a, b] (no c!, as the other
    emissions)."""
    if b - a < 1e-12:
        return math.exp(c * math.log(a) - a)
    lg = math.lgamma(c + 1.0)
    return (_pois_cdf(c, a) - _pois_cdf(c, b)) / (b - a) * math.exp(lg)


@njit(cache=True)
def vd_llr(c, fs, cur, A, pi, brk, ratio, capped, margin, min_recent, min_expected, iid_h,
           last_low, last_low_frac, window, min_base_weeks, r_floor, first_partial=False):
    """iid_h > 0 adds the shipped detector's per-week holiday allowance to the
    normal state's emission (any normal week may also be an isolated zero week)."""
    first_full = int(math.floor(fs)) + 1
    frm = max(cur - window, first_full)
    last_start = cur - max(min_recent, 1)
    nw = c.shape[0]
    best = NEG
    base = 0
    for w in range(0, min(frm, nw)):
        base += c[w]
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
        weeks = cur - k
        if bf / known * weeks < min_expected:
            continue
        rv = 0
        for w in range(k, cur):
            rv += c[w] if w < nw else 0
        r = ratio
        if ratio < 0:
            r = min(-ratio / l0, 1.0)   # oracle: an absolute rate per week
        if capped:
            obs = rv / (l0 * weeks)
            if obs < r:
                r = max(obs, r_floor)
        l1 = r * l0
        if last_low > 0:
            ok = True
            for w in range(cur - last_low, cur):
                cw = c[w] if w < nw else 0
                if cw > last_low_frac * l0:
                    ok = False
            if not ok:
                continue
        if first_partial:
            ck = c[k] if k < nw else 0
            h1 = (rv - ck) * math.log(l1) - l1 * (weeks - 1) + math.log(_partial_week_pois(ck, l1, l0))
        else:
            h1 = rv * math.log(l1) - l1 * weeks
        a = pi.copy()
        ll = 0.0
        ll_pre = 0.0
        ln_l0 = math.log(l0)
        for w in range(frm, cur):
            if w == k:
                ll_pre = ll
            cw = c[w] if w < nw else 0
            e_n = math.exp(cw * ln_l0 - l0)
            if iid_h > 0:
                e_n = (1 - iid_h) * e_n + (iid_h if cw == 0 else 0.0)
            e_b = 1.0 if cw == 0 else 0.0
            new = _fwd(A, a, e_n, e_b, brk)
            s = new.sum()
            ll += math.log(s)
            a = new / s
        llr = h1 - (ll - ll_pre)
        if llr > best:
            best = llr
    return best


@njit(cache=True)
def _binom_sf(n, x, k):
    """P(Bin(n, x) >= k)."""
    t = 0.0
    for j in range(k, n + 1):
        c = 1.0
        for m in range(j):
            c = c * (n - m) / (m + 1)
        t += c * x ** j * (1.0 - x) ** (n - j)
    return t


@njit(cache=True)
def _partial_week_binom(sw, ow, a, b):
    """Mean of p^o (1-p)^(s-o) over p uniform in [a, b] (no binomial
    coefficient, as the other emissions): a week in which the change happened
    part-way through."""
    if b - a < 1e-12:
        return a ** ow * (1.0 - a) ** (sw - ow)
    c = 1.0
    for m in range(ow):
        c = c * (sw - m) / (m + 1)
    integ = (_binom_sf(sw + 1, b, ow + 1) - _binom_sf(sw + 1, a, ow + 1)) / (sw + 1)
    return integ / c / (b - a)


@njit(cache=True)
def ord_llr(s, o, fs, cur, A, pi, brk, ratio, capped, margin, min_recent, min_rate, iid_h,
            last_low, window, min_base_weeks, min_base_sends, first_partial=False,
            min_recent_sends=0):
    first_full = int(math.floor(fs)) + 1
    frm = max(cur - window, first_full)
    last_start = cur - max(min_recent, 1)
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
        if bs < min_base_sends or rs == 0 or rs < min_recent_sends:
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
        p1 = ratio * p0
        if capped == 1:
            p1 = min(p1, ro / rs)
        elif capped == 2 and ro == 0:
            p1 = 0.0
        if last_low > 0:
            ok = True
            for w in range(cur - last_low, cur):
                if o[w] > 0:
                    ok = False
            if not ok:
                continue
        h1 = 0.0
        for w in range(k, cur):
            sw = s[w]
            ow = min(o[w], sw)
            if first_partial and w == k:
                if sw > 0:
                    v = _partial_week_binom(sw, ow, p1, p0)
                    if v <= 0.0:
                        h1 = -np.inf
                        break
                    h1 += math.log(v)
                continue
            if ow > 0:
                h1 += ow * math.log(p1) if p1 > 0 else -np.inf
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
            if iid_h > 0:
                e_n = (1 - iid_h) * e_n + (iid_h if ow == 0 else 0.0)
            e_b = 1.0 if ow == 0 else 0.0
            new = _fwd(A, a, e_n, e_b, brk)
            t = new.sum()
            ll += math.log(t)
            a = new / t
        llr = h1 - (ll - ll_pre)
        if llr > best:
            best = llr
    return best


@njit(cache=True)
def series_vd(C, FS, e_from, e_to, A, pi, brk, ratio, capped, margin, min_recent, min_expected,
              iid_h, last_low, last_low_frac, window, min_base_weeks, r_floor, first_partial=False):
    n = C.shape[0]
    out = np.full((n, e_to - e_from + 1), NEG)
    for i in range(n):
        for cur in range(e_from, e_to + 1):
            out[i, cur - e_from] = vd_llr(C[i], FS[i], cur, A, pi, brk, ratio, capped, margin,
                                          min_recent, min_expected, iid_h, last_low,
                                          last_low_frac, window, min_base_weeks, r_floor,
                                          first_partial)
    return out


@njit(cache=True)
def series_ord(S, O, FS, e_from, e_to, A, pi, brk, ratio, capped, margin, min_recent, min_rate,
               iid_h, last_low, window, min_base_weeks, min_base_sends, first_partial=False,
               min_recent_sends=0):
    n = S.shape[0]
    out = np.full((n, e_to - e_from + 1), NEG)
    for i in range(n):
        for cur in range(e_from, e_to + 1):
            out[i, cur - e_from] = ord_llr(S[i], O[i], FS[i], cur, A, pi, brk, ratio, capped,
                                           margin, min_recent, min_rate, iid_h, last_low,
                                           window, min_base_weeks, min_base_sends, first_partial,
                                           min_recent_sends)
    return out
