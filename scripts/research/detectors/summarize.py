"""Per config: the lowest quiet rate (worst quiet set) at which min recall >= 0.99,
and the best min recall with worst quiet <= 0.5%."""
import re, sys
from collections import defaultdict
rows = defaultdict(list)
import os
POOL = os.environ.get('POOL') == '1'
for line in open(sys.argv[1]):
    m = re.match(r"(.*?)\s+th=\s*([\d.]+) quiet%=([\d. ]+?)\s+recall=([\d. ]+?) min=([\d.]+) delay=([\d.na]+)(?: extra%=(.*))?$", line.strip())
    if not m: continue
    lab = m.group(1).strip(); th = float(m.group(2))
    qq = [float(x) for x in m.group(3).split()]; q = (qq[0] * 2000 + sum(qq[1:]) * 4000) / (2000 + 4000 * (len(qq) - 1)) if POOL else max(qq); mn = float(m.group(5))
    ex = max((float(x) for x in m.group(7).split()), default=0) if m.group(7) else 0
    rows[lab].append((th, q, mn, float(m.group(6)), ex))
out = []
for lab, rs in rows.items():
    a = [r for r in rs if r[2] >= 0.99]
    b = [r for r in rs if r[1] <= 0.5]
    qa = min(a, key=lambda r: r[1]) if a else None
    rb = max(b, key=lambda r: r[2]) if b else None
    out.append((qa[1] if qa else 99, lab, qa, rb))
out.sort()
for q, lab, qa, rb in out[:int(sys.argv[2]) if len(sys.argv) > 2 else 25]:
    print(f"{lab:<62} @rec>=.99: {('th=%.2f quiet=%.2f%% rec=%.4f delay=%.2f' % qa[:4]) if qa else '-':<48} @quiet<=.5: {('th=%.2f quiet=%.2f%% rec=%.4f' % rb[:3]) if rb else '-'}")
