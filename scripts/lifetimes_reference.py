#!/usr/bin/env python3
"""Regenerates tests/fixtures/lifetimes/reference.csv: P(alive) and expected
purchases from the `lifetimes` package (Cameron Davidson-Pilon, MIT), an
implementation independent of churnwatch's, for the cross-check in
tests/fit_cli.rs.

    python3 -m venv /tmp/lt && /tmp/lt/bin/pip install lifetimes==0.11.3
    /tmp/lt/bin/python scripts/lifetimes_reference.py > tests/fixtures/lifetimes/reference.csv

Parameters are set, not fitted, to the published CDNOW estimates, so the
comparison isolates the formulas. The members are the first CDNOW customers
of the package's `cdnow_customers_summary.csv` plus edge cases (no repeats,
recent and long-lapsed heavy buyers, large T).
"""
import sys

import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter, ModifiedBetaGeoFitter
from lifetimes.datasets import load_cdnow_summary

MODELS = {
    "bgnbd": (BetaGeoFitter, dict(r=0.242593, alpha=4.413532, a=0.792886, b=2.425752)),
    "mbgnbd": (ModifiedBetaGeoFitter, dict(r=0.524838, alpha=6.182988, a=0.891356, b=1.614)),
}
HORIZON_WEEKS = 90 / 7

df = load_cdnow_summary(index_col=[0])
members = [(int(r.frequency), float(r.recency), float(r.T)) for r in df.head(12).itertuples()]
members += [
    (0, 0.0, 1.0), (0, 0.0, 200.0), (1, 0.5, 0.5), (3, 2.0, 60.0),
    (40, 38.0, 38.86), (40, 10.0, 38.86), (150, 100.0, 104.0), (150, 20.0, 300.0),
]
out = sys.stdout
out.write("model,r,alpha,a,b,x,t_x,T,p_alive,horizon_weeks,expected_purchases\n")
for name, (cls, params) in MODELS.items():
    m = cls()
    m.params_ = pd.Series(params)
    for x, tx, t in members:
        p = float(np.asarray(m.conditional_probability_alive(x, tx, t)).ravel()[0])
        e = float(np.asarray(m.conditional_expected_number_of_purchases_up_to_time(HORIZON_WEEKS, x, tx, t)).ravel()[0])
        out.write(f"{name},{params['r']},{params['alpha']},{params['a']},{params['b']},"
                  f"{x},{tx},{t},{p!r},{HORIZON_WEEKS!r},{e!r}\n")
