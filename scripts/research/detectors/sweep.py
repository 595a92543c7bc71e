"""Threshold sweeps: quiet (steady with breaks) vs recall (scenario)."""
import time
import numpy as np
import pops
from hmm import max_llr_series_vd, max_llr_series_ord
import current
from numba import njit

_cache = {}
def P(name, *a):
    key = (name,) + a
    if key not in _cache:
        _cache[key] = getattr(pops, name)(*a)
    return _cache[key]

@njit(cache=True)
def series_cur_vd(C, FS, e_from, e_to, h, margin, min_recent, ratio):
    n = C.shape[0]
    out = np.full((n, e_to - e_from + 1), -np.inf)
    for i in range(n):
        for cur in range(e_from, e_to + 1):
            out[i, cur - e_from] = current.vd_llr(C[i], FS[i], cur, 16, min_recent, 8, 6.0, ratio, h, margin)
    return out

@njit(cache=True)
def series_cur_ord(S, O, FS, e_from, e_to, h, margin, min_recent, min_rate, ratio):
    n = S.shape[0]
    out = np.full((n, e_to - e_from + 1), -np.inf)
    for i in range(n):
        for cur in range(e_from, e_to + 1):
            out[i, cur - e_from] = current.ord_llr(S[i], O[i], FS[i], cur, 16, min_recent, 8, 16, min_rate, ratio, h, margin)
    return out

def series(p, cfg):
    kind = p["kind"]; t = cfg.get("type", "hmm")
    a = (p["eval_from"], p["eval_to"])
    if t == "hmm2":
        import hmm2
        A, pi, brk = hmm2.chain(cfg["q"], cfg["dur"], cfg.get("max_breaks"), cfg.get("start_in_break", True))
        if kind == "visits":
            return hmm2.series_vd(p["c"], p["first_seen"], *a, A, pi, brk, cfg.get("ratio", .25), cfg.get("capped", False), cfg.get("margin", 1.0), cfg.get("min_recent", 6), cfg.get("min_expected", 6.0), cfg.get("iid_h", 0.0), cfg.get("last_low", 0), cfg.get("last_low_frac", 0.5), cfg.get("window", 16), cfg.get("min_base_weeks", 8), cfg.get("r_floor", 1e-3), cfg.get("first_partial", False))
        return hmm2.series_ord(p["s"], p["o"], p["first_seen"], *a, A, pi, brk, cfg.get("ratio", .25), cfg.get("capped", True), cfg.get("margin", .5), cfg.get("min_recent", 4), cfg.get("min_rate", .3), cfg.get("iid_h", 0.0), cfg.get("last_low", 0), cfg.get("window", 16), cfg.get("min_base_weeks", 8), cfg.get("min_base_sends", 16), cfg.get("first_partial", False), cfg.get("min_recent_sends", 0))
    if kind == "visits":
        if t == "cur":
            return series_cur_vd(p["c"], p["first_seen"], *a, cfg.get("h", .04), cfg.get("margin", 1.0), cfg.get("min_recent", 6), cfg.get("ratio", .25))
        return max_llr_series_vd(p["c"], p["first_seen"], *a, cfg["q"], np.asarray(cfg["dur"], float), cfg["ratio"], cfg["capped"], cfg["margin"], cfg["min_recent"], cfg.get("min_expected", 6.0), cfg.get("eps", 0.0), cfg.get("last_low", 0), cfg.get("last_low_frac", 0.5))
    if t == "cur":
        return series_cur_ord(p["s"], p["o"], p["first_seen"], *a, cfg.get("h", .08), cfg.get("margin", .5), cfg.get("min_recent", 4), cfg.get("min_rate", .3), cfg.get("ratio", .25))
    return max_llr_series_ord(p["s"], p["o"], p["first_seen"], *a, cfg["q"], np.asarray(cfg["dur"], float), cfg["ratio"], cfg["capped"], cfg["margin"], cfg["min_recent"], cfg.get("min_rate", 0.3), cfg.get("last_low", 0))

def evaluate(kind, cfg, thresholds, quiet_sets, recall_sets, extra_quiet=()):
    qs = [series(p, cfg).max(axis=1) for p in quiet_sets]
    rs = [series(p, cfg) for p in recall_sets]
    eq = [series(p, cfg).max(axis=1) for p in extra_quiet]
    rows = []
    for th in thresholds:
        fp = [float((m >= th).mean()) for m in qs]
        rec = [float((s.max(axis=1) >= th).mean()) for s in rs]
        # delay: complete decline weeks when first fired (only members firing after the start)
        d = []
        for p, s in zip(recall_sets, rs):
            f = s >= th
            first = np.where(f.any(axis=1), f.argmax(axis=1) + p["eval_from"], -1)
            ok = first >= 0
            d.append(first[ok] - p["decline_start"])
        dd = np.concatenate(d)
        ex = [float((m >= th).mean()) for m in eq]
        rows.append((th, fp, rec, float(np.mean(dd)) if len(dd) else np.nan, ex))
    return rows

def fmt(rows, label):
    out = []
    for th, fp, rec, dl, ex in rows:
        out.append(f"{label:<60} th={th:5.2f} quiet%={' '.join(f'{100*x:5.2f}' for x in fp)}  recall={' '.join(f'{x:.4f}' for x in rec)} min={min(rec):.4f} delay={dl:.2f}" + (f" extra%={' '.join(f'{100*x:5.2f}' for x in ex)}" if ex else ""))
    return "\n".join(out)
