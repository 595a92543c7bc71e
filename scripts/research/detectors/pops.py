"""Populations as weekly counts.

Every population is returned as a dict with
  kind: 'visits' or 'opens'
  c (visits) or s, o (opens): int64 arrays (N, W), week 0 = column 0
  first_seen: float64 (N,), the member's first event in weeks (fractional)
  eval_from, eval_to: evaluate at week boundaries cur in eval_from..=eval_to
      (cur: the weeks < cur are complete)
  decline_start: (scenario only) the first complete week of the decline
"""
import math

import numpy as np

M64 = (1 << 64) - 1


class Lcg:
    """Exact port of src/detect/testkit.rs `Lcg` (LCG + SplitMix64 finaliser)."""

    def __init__(self, seed):
        self.s = seed & M64

    def next(self):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        return (z >> 11) / float(1 << 53)

    def poisson(self, mean):
        k, p, l = 0, 1.0, math.exp(-mean)
        while True:
            p *= self.next()
            if p <= l:
                return k
            k += 1


def two_breaks(rng):
    first = 2 + int(rng.next() * 20.0)
    breaks = (first, first + 14 + int(rng.next() * 16.0))
    return lambda w: any(b <= w < b + 2 for b in breaks)


# ---------------------------------------------------------------- unit tests

def unit_steady_visitors(n=2000, seed=42, weeks=53, breaks=True):
    """visit_decline.rs `steady_visitors_with_short_breaks_stay_mostly_quiet_over_a_year`
    (exact: same LCG, same draws).  breaks=False: same rates, no breaks
    (draws differ from Rust then)."""
    rng = Lcg(seed)
    c = np.zeros((n, weeks), np.int64)
    brk = np.zeros((n, weeks), bool)
    for i in range(n):
        rate = (0.15 + 0.65 * (i / n)) * 7.0
        on_break = two_breaks(rng) if breaks else (lambda w: False)
        c[i, 0] += 1  # the visit at day 0
        for w in range(weeks):
            b = on_break(w)
            brk[i, w] = b
            c[i, w] += rng.poisson(0.0 if b else rate)
    return dict(kind="visits", c=c, first_seen=np.zeros(n), eval_from=1,
                eval_to=weeks, brk=brk)


def unit_steady_visitors_nobreak30(n=2000, seed=11):
    """`poisson_noise_around_a_steady_rate_stays_quiet` (exact)."""
    rng = Lcg(seed)
    weeks = 30
    c = np.zeros((n, weeks), np.int64)
    for i in range(n):
        rate = 0.5 + 5.0 * (i / 2000.0)
        c[i, 0] += 1
        for w in range(weeks):
            c[i, w] += rng.poisson(rate)
    return dict(kind="visits", c=c, first_seen=np.zeros(n), eval_from=1, eval_to=30)


def unit_steady_readers(n=2000, seed=42, weeks=53, sends=3):
    """open_rate_drop.rs `steady_readers_with_short_breaks_stay_quiet_over_a_year`
    (exact for sends=3)."""
    rng = Lcg(seed)
    s = np.zeros((n, weeks), np.int64)
    o = np.zeros((n, weeks), np.int64)
    brk = np.zeros((n, weeks), bool)
    for i in range(n):
        rate = 0.15 + 0.65 * (i / n)
        on_break = two_breaks(rng)
        for w in range(weeks):
            brk[i, w] = on_break(w)
            r = 0.0 if on_break(w) else rate
            for _ in range(sends):
                s[i, w] += 1
                if rng.next() < r:
                    o[i, w] += 1
    # first send at day 0.5: week 0, first_full 1
    return dict(kind="opens", s=s, o=o, first_seen=np.full(n, 0.5 / 7), eval_from=1,
                eval_to=weeks, brk=brk)


# ------------------------------------------------------- numpy-RNG variants

def np_steady_visitors(n, seed, weeks=53, lo=0.15, hi=0.8, breaks="two"):
    """Like the unit test (rates spread evenly over lo..hi per day, two
    two-week breaks), drawn with numpy so any seed/size can be used."""
    g = np.random.default_rng(seed)
    rate = (lo + (hi - lo) * (np.arange(n) / n)) * 7.0
    brk = break_mask(g, n, weeks, breaks)
    lam = np.where(brk, 0.0, rate[:, None])
    c = g.poisson(lam)
    c[:, 0] += 1
    return dict(kind="visits", c=c.astype(np.int64), first_seen=np.zeros(n), eval_from=1,
                eval_to=weeks, brk=brk)


def break_mask(g, n, weeks, breaks):
    brk = np.zeros((n, weeks), bool)
    if breaks == "none":
        return brk
    if breaks == "two":
        first = 2 + (g.random(n) * 20).astype(int)
        second = first + 14 + (g.random(n) * 16).astype(int)
        for b in (first, second):
            for d in range(2):
                idx = b + d
                ok = idx < weeks
                brk[np.arange(n)[ok], idx[ok]] = True
        return brk
    raise ValueError(breaks)


def np_steady_readers(n, seed, weeks=53, lo=0.15, hi=0.8, sends=3, breaks="two"):
    g = np.random.default_rng(seed)
    rate = lo + (hi - lo) * (np.arange(n) / n)
    brk = break_mask(g, n, weeks, breaks)
    if sends == "2-3":
        s = g.integers(2, 4, size=(n, weeks))
    else:
        s = np.full((n, weeks), sends)
    p = np.where(brk, 0.0, rate[:, None])
    o = g.binomial(s, p)
    return dict(kind="opens", s=s.astype(np.int64), o=o.astype(np.int64),
                first_seen=np.full(n, 0.5 / 7), eval_from=1, eval_to=weeks, brk=brk)


# ------------------------------------------------------------- the scenario
# simulate/mod.rs with --end 2026-11-01T00:00:00Z (a Sunday), 180 days.
# Times in days since day(0); calendar weeks start Monday 00:00 UTC.
END_DAYS = 20758.0           # 2026-11-01 in days since the epoch
DAYS = 180.0
D0 = END_DAYS - DAYS          # day(0), absolute


def _abs_week(d):
    """week_of for a day offset from day(0) (float or array)."""
    return np.floor((D0 + d + 3.0) / 7.0).astype(np.int64)


W_FIRST = int(_abs_week(0.0))          # week 0 of the arrays
W_END = int(_abs_week(DAYS))           # the (incomplete) week holding the end
NW = W_END - W_FIRST + 1


def _stream(g, per_week, frm, to):
    """Journey::stream: Poisson(per_week) per 7-day block from `frm`,
    uniform within the block, kept if < to."""
    if per_week <= 0 or to <= frm:
        return np.zeros(0)
    weeks = int(math.ceil((to - frm) / 7.0))
    n = g.poisson(per_week, weeks)
    out = []
    for w in range(weeks):
        d = frm + w * 7.0 + g.random(n[w]) * 7.0
        out.append(d[d < to])
    return np.concatenate(out) if out else np.zeros(0)


def _week_counts(days):
    days = days[days <= DAYS]
    w = _abs_week(days) - W_FIRST
    return np.bincount(w, minlength=NW)[:NW]


def scenario_visits(n, seed, before_rate=(3.0, 6.0), after_rate=0.2):
    """Population::VisitDecline."""
    g = np.random.default_rng(seed)
    c = np.zeros((n, NW), np.int64)
    fs = np.zeros(n)
    end = DAYS
    cut = end - 49.0
    for i in range(n):
        start = g.uniform(0, 7)
        before = g.uniform(*before_rate)
        v = np.concatenate([_stream(g, before, start, cut), _stream(g, after_rate, cut, end)])
        c[i] = _week_counts(v)
        fs[i] = (D0 + start + 3.0) / 7.0 - W_FIRST  # purchases start at `start`
    return dict(kind="visits", c=c, first_seen=fs, eval_from=1, eval_to=W_END - W_FIRST,
                decline_start=int(_abs_week(cut)) - W_FIRST + 1)


def _emails(g, per_week, start, end, rate):
    d = start + g.random() * 2.0
    step = 7.0 / per_week
    sends = np.arange(d, end, step)
    p = rate(sends)
    opened = g.random(len(sends)) < p
    delay = g.random(len(sends)) * 1.5
    opens = (sends + delay)[opened]
    return sends, opens


def scenario_opens(n, seed, engaged=(0.5, 0.8)):
    """Population::OpenRateDrop (three mails a week, none opened for the
    last seven weeks)."""
    g = np.random.default_rng(seed)
    s = np.zeros((n, NW), np.int64)
    o = np.zeros((n, NW), np.int64)
    fs = np.zeros(n)
    end = DAYS
    cut = end - 49.0
    for i in range(n):
        start = g.uniform(0, 7)
        e = g.uniform(*engaged)
        se, op = _emails(g, 3, start, end, lambda d: np.where(d < cut, e, 0.0))
        s[i] = _week_counts(se)
        o[i] = _week_counts(op)
        fs[i] = (D0 + start + 3.0) / 7.0 - W_FIRST
    return dict(kind="opens", s=s, o=o, first_seen=fs, eval_from=1, eval_to=W_END - W_FIRST,
                decline_start=int(_abs_week(cut)) - W_FIRST + 1)


def scenario_quiet_visits(n, seed, per_week=(1.0, 4.0)):
    """Steady / purchasegap / reactivated / spend: visits at U(1,4) a week
    (per_week a tuple) or a fixed rate (lowfreq: 0.3)."""
    g = np.random.default_rng(seed)
    c = np.zeros((n, NW), np.int64)
    fs = np.zeros(n)
    for i in range(n):
        start = g.uniform(0, 7)
        r = g.uniform(*per_week) if isinstance(per_week, tuple) else per_week
        c[i] = _week_counts(_stream(g, r, start, DAYS))
        fs[i] = (D0 + start + 3.0) / 7.0 - W_FIRST
    return dict(kind="visits", c=c, first_seen=fs, eval_from=1, eval_to=W_END - W_FIRST)


def scenario_quiet_opens(n, seed, per_week=2, scale=1.0):
    """Steady / daily (2 mails a week at U(0.3,0.8)); lowfreq (1 a week at
    half that rate: per_week=1, scale=0.5)."""
    g = np.random.default_rng(seed)
    s = np.zeros((n, NW), np.int64)
    o = np.zeros((n, NW), np.int64)
    fs = np.zeros(n)
    for i in range(n):
        start = g.uniform(0, 7)
        r = g.uniform(0.3, 0.8) * scale
        se, op = _emails(g, per_week, start, DAYS, lambda d: np.full(len(d), r))
        s[i] = _week_counts(se)
        o[i] = _week_counts(op)
        fs[i] = (D0 + start + 3.0) / 7.0 - W_FIRST
    return dict(kind="opens", s=s, o=o, first_seen=fs, eval_from=1, eval_to=W_END - W_FIRST)


# ------------------------------------------------- robustness variants
def _break_days(g, n, weeks, kind):
    """Per member, a list of (start_day, length_days) breaks: 'var' = two breaks of
    1-3 whole weeks (aligned); 'mis' = two 14-day breaks starting on any day."""
    out = []
    for _ in range(n):
        first = 2 + int(g.random() * 20)
        second = first + 14 + int(g.random() * 16)
        if kind == "var":
            out.append([(first * 7.0, 7.0 * g.integers(1, 4)), (second * 7.0, 7.0 * g.integers(1, 4))])
        else:
            out.append([(first * 7.0 + g.random() * 7, 14.0), (second * 7.0 + g.random() * 7, 14.0)])
    return out


def _away_fraction(br, weeks):
    f = np.zeros(weeks)
    for (b, L) in br:
        for w in range(weeks):
            lo, hi = max(b, w * 7.0), min(b + L, w * 7.0 + 7.0)
            if hi > lo:
                f[w] += (hi - lo) / 7.0
    return np.minimum(f, 1.0)


def np_steady_visitors_var(n, seed, kind="mis", weeks=53):
    g = np.random.default_rng(seed)
    rate = (0.15 + 0.65 * (np.arange(n) / n)) * 7.0
    brs = _break_days(g, n, weeks, kind)
    away = np.stack([_away_fraction(b, weeks) for b in brs])
    c = g.poisson(rate[:, None] * (1 - away))
    c[:, 0] += 1
    return dict(kind="visits", c=c.astype(np.int64), first_seen=np.zeros(n), eval_from=1, eval_to=weeks)


def np_steady_readers_var(n, seed, kind="mis", weeks=53, sends=3):
    g = np.random.default_rng(seed)
    rate = 0.15 + 0.65 * (np.arange(n) / n)
    brs = _break_days(g, n, weeks, kind)
    days = [0.5 + j * (7.0 / sends) for j in range(sends)]
    s = np.full((n, weeks), sends, np.int64)
    o = np.zeros((n, weeks), np.int64)
    for i in range(n):
        for w in range(weeks):
            for d in days:
                t = w * 7.0 + d
                if any(b <= t < b + L for b, L in brs[i]):
                    continue
                o[i, w] += g.random() < rate[i]
    return dict(kind="opens", s=s, o=o, first_seen=np.full(n, 0.5 / 7), eval_from=1, eval_to=weeks)
