#!/usr/bin/env python3
"""Static checks of the Grafana dashboard deploy/grafana/churnwatch.json.

    python3 scripts/check-dashboard.py [DASHBOARD.json]

- the file is valid JSON with uid `churnwatch` and the `datasource`, `job`
  and `instance` template variables;
- panel ids are unique integers; every panel (rows included) has a title and
  a description; grid positions fit the 24 columns and do not overlap;
- every non-row panel and every target uses the `${datasource}` variable, has
  at least one target, and sets a unit;
- every PromQL expression parses into tokens, references only churnwatch
  metrics churnwatch exports (the list below; histograms only through their
  `_bucket`, `_sum`, `_count` series), and selects every metric with
  `job=~"$job"` and `instance=~"$instance"`;
- with PyYAML installed, the provisioning files under
  deploy/grafana/provisioning/ are checked too (skipped otherwise).

Prints a one-line summary; exits 1 with one line per problem on failure.
scripts/check_deploy.py additionally checks the metric names against a real
/metrics scrape.
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "churnwatch.json")
PROVISIONING = os.path.join(ROOT, "deploy", "grafana", "provisioning")

COUNTERS_AND_GAUGES = {
    "churnwatch_events_consumed_total",
    "churnwatch_events_rejected_total",
    "churnwatch_events_duplicate_total",
    "churnwatch_dlq_published_total",
    "churnwatch_alerts_published_total",
    "churnwatch_alerted_members_total",
    "churnwatch_reactivations_total",
    "churnwatch_consumer_lag",
    "churnwatch_state_quarantined_total",
    "churnwatch_state_write_errors_total",
    "churnwatch_state_write_failing",
    "churnwatch_rebalances_total",
    "churnwatch_build_info",
    "churnwatch_stream_clock_seconds",
    "churnwatch_stream_clock_lag_seconds",
    "churnwatch_timers_pending",
    "churnwatch_timers_fired_total",
    "churnwatch_outbox_depth",
    "churnwatch_members_tracked",
    "churnwatch_members_evicted_total",
    "churnwatch_state_live_sst_bytes",
    "churnwatch_state_block_cache_usage_bytes",
    "churnwatch_member_cache_members",
    "churnwatch_member_cache_bytes",
    "churnwatch_state_pending_compaction_bytes",
    "churnwatch_state_memtable_bytes",
    "churnwatch_state_write_stalls_total",
    "churnwatch_commits_total",
    "churnwatch_partitions_assigned",
    "churnwatch_partitions_held",
    "churnwatch_ready",
    "churnwatch_broker_errors_total",
    "churnwatch_restore_records_total",
}
HISTOGRAMS = {
    "churnwatch_processing_latency_seconds",
    "churnwatch_event_to_alert_latency_seconds",
    "churnwatch_commit_duration_seconds",
}
ALLOWED = COUNTERS_AND_GAUGES | {
    h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")
}
METRIC_NAME = re.compile(r"^churnwatch_[a-z_]+$")
DS_UID = "${datasource}"
REQUIRED_MATCHERS = {("job", "=~", "$job"), ("instance", "=~", "$instance")}

# ------------------------------------------------------------------ PromQL lexing
TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?
               (?:(?:ms|[smhdwy])(?:[0-9]+(?:ms|[smhdwy]))*)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=@])
  | (?P<punct>[(){}\[\],])
""", re.X)

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "start", "end"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


class PromQLError(Exception):
    pass


def lex(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise PromQLError("cannot tokenize at %r" % expr[pos:pos + 20])
        kind = m.lastgroup
        if kind != "ws":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def unquote(s):
    if s[0] == "`":
        return s[1:-1]
    return re.sub(r"\\(.)", r"\1", s[1:-1])


def parse_matchers(tokens, i):
    """tokens[i] is '{'. Returns (set of (label, op, value), index after '}')."""
    matchers = set()
    i += 1
    while True:
        if i >= len(tokens):
            raise PromQLError("unterminated label matcher")
        kind, text = tokens[i]
        if text == "}":
            return matchers, i + 1
        if text == ",":
            i += 1
            continue
        if kind not in ("ident", "string") or i + 2 >= len(tokens):
            raise PromQLError("bad label matcher near %r" % text)
        (_, op), (vkind, value) = tokens[i + 1], tokens[i + 2]
        if op not in ("=", "!=", "=~", "!~") or vkind != "string":
            raise PromQLError("bad label matcher %s%s%s" % (text, op, value))
        label = unquote(text) if kind == "string" else text
        matchers.add((label, op, unquote(value)))
        i += 3


def metric_selectors(expr):
    """[(metric name, set of matchers)] for every vector selector in expr."""
    tokens = lex(expr)
    found = []
    depth = {"(": 0, "[": 0, "{": 0}
    label_list_depth = None  # paren depth at which a by/on/... label list is open
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if text == "(":
            depth["("] += 1
        elif text == ")":
            if label_list_depth is not None and depth["("] == label_list_depth:
                label_list_depth = None
            depth["("] -= 1
        elif text == "[":
            depth["["] += 1
        elif text == "]":
            depth["["] -= 1
        elif text == "{":
            # a selector without a metric name: {__name__=...}
            matchers, i = parse_matchers(tokens, i)
            names = [v for (l, op, v) in matchers if l == "__name__"]
            found.append((names[0] if names else "{...}", matchers))
            continue
        elif text == "}":
            raise PromQLError("unbalanced '}'")
        elif kind == "ident" and depth["["] == 0 and label_list_depth is None:
            low = text.lower()
            if low in LABEL_LIST_KEYWORDS and nxt == "(":
                label_list_depth = depth["("] + 1
            elif low in KEYWORDS:
                pass
            elif nxt == "(" or (nxt or "").lower() in ("by", "without"):
                pass  # function call, or aggregation with a leading by/without clause
            else:
                matchers = set()
                if nxt == "{":
                    matchers, i = parse_matchers(tokens, i + 1)
                    found.append((text, matchers))
                    continue
                found.append((text, matchers))
        i += 1
    if depth["("] != 0 or depth["["] != 0:
        raise PromQLError("unbalanced brackets")
    return found


# ------------------------------------------------------------------ checks
class Checker:
    def __init__(self):
        self.failures = []
        self.metrics = set()
        self.queries = 0

    def fail(self, msg):
        self.failures.append(msg)

    def check_expr(self, where, expr, need_selectors):
        try:
            selectors = metric_selectors(expr)
        except PromQLError as e:
            self.fail("%s: cannot parse expr (%s): %s" % (where, e, expr))
            return
        if not selectors:
            self.fail("%s: expr references no metric: %s" % (where, expr))
        for name, matchers in selectors:
            if not METRIC_NAME.match(name):
                self.fail("%s: metric %r does not match churnwatch_[a-z_]+" % (where, name))
            elif name not in ALLOWED:
                hint = " (use its _bucket/_sum/_count series)" if name in HISTOGRAMS else ""
                self.fail("%s: unknown metric %s%s" % (where, name, hint))
            else:
                self.metrics.add(name)
            missing = REQUIRED_MATCHERS - matchers
            if need_selectors and missing:
                self.fail("%s: %s lacks %s" % (
                    where, name, ", ".join('%s%s"%s"' % m for m in sorted(missing))))

    def check_datasource(self, where, ds):
        uid = ds.get("uid") if isinstance(ds, dict) else ds
        if uid != DS_UID:
            self.fail("%s: datasource is %r, want uid %r" % (where, ds, DS_UID))

    def check_templating(self, dash):
        vars_ = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
        ds = vars_.get("datasource")
        if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
            self.fail("templating: need a `datasource` variable of type datasource "
                      "(query prometheus)")
        for name, multi in (("job", None), ("instance", True)):
            v = vars_.get(name)
            if not v or v.get("type") != "query":
                self.fail("templating: need a query variable `%s`" % name)
                continue
            self.check_datasource("templating %s" % name, v.get("datasource"))
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if not isinstance(q, str) or not q.startswith("label_values("):
                self.fail("templating %s: query should be label_values(...), got %r" % (name, q))
            else:
                inner = q[len("label_values("):].rsplit(",", 1)[0]
                for metric, _ in metric_selectors(inner):
                    if metric not in ALLOWED:
                        self.fail("templating %s: unknown metric %s" % (name, metric))
            if multi and not (v.get("multi") and v.get("includeAll")):
                self.fail("templating %s: should be multi-value with an All option" % name)
        return len(vars_)

    def check_panels(self, dash):
        panels = []

        def collect(ps):
            for p in ps:
                panels.append(p)
                collect(p.get("panels", []))
        collect(dash.get("panels", []))
        if not panels:
            self.fail("dashboard has no panels")

        ids = {}
        for p in panels:
            pid = p.get("id")
            label = "panel %s %r" % (pid, p.get("title"))
            if not isinstance(pid, int):
                self.fail("%s: id must be an integer" % label)
            elif pid in ids:
                self.fail("%s: duplicate id (also %r)" % (label, ids[pid]))
            else:
                ids[pid] = p.get("title")
            if not str(p.get("title", "")).strip():
                self.fail("%s: missing title" % label)
            if not str(p.get("description", "")).strip():
                self.fail("%s: missing description" % label)
            g = p.get("gridPos") or {}
            if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
                self.fail("%s: gridPos needs integer x, y, w, h" % label)
            elif g["x"] < 0 or g["w"] < 1 or g["h"] < 1 or g["x"] + g["w"] > 24:
                self.fail("%s: gridPos %s does not fit 24 columns" % (label, g))
            if p.get("type") == "row":
                continue
            self.check_datasource(label, p.get("datasource"))
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
            if not unit:
                self.fail("%s: no unit in fieldConfig.defaults" % label)
            targets = p.get("targets") or []
            if not targets:
                self.fail("%s: no targets" % label)
            refs = set()
            for t in targets:
                where = "%s target %s" % (label, t.get("refId"))
                if t.get("refId") in refs:
                    self.fail("%s: duplicate refId" % where)
                refs.add(t.get("refId"))
                self.check_datasource(where, t.get("datasource"))
                expr = t.get("expr")
                if not isinstance(expr, str) or not expr.strip():
                    self.fail("%s: empty expr" % where)
                    continue
                self.queries += 1
                self.check_expr(where, expr, need_selectors=True)

        # Overlaps among the top-level (expanded) layout.
        cells = {}
        for p in dash.get("panels", []):
            g = p.get("gridPos") or {}
            if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
                continue
            for y in range(g["y"], g["y"] + g["h"]):
                for x in range(g["x"], min(g["x"] + g["w"], 24)):
                    other = cells.setdefault((x, y), p.get("id"))
                    if other != p.get("id"):
                        self.fail("panel %s overlaps panel %s at x=%d y=%d"
                                  % (p.get("id"), other, x, y))
                        break
                else:
                    continue
                break
        return panels

    def check_provisioning(self):
        try:
            import yaml
        except ImportError:
            return "provisioning skipped (no PyYAML)"
        ds_file = os.path.join(PROVISIONING, "datasources", "prometheus.yml")
        db_file = os.path.join(PROVISIONING, "dashboards", "churnwatch.yml")
        try:
            ds = yaml.safe_load(open(ds_file))
            db = yaml.safe_load(open(db_file))
        except (OSError, yaml.YAMLError) as e:
            self.fail("provisioning: %s" % e)
            return "provisioning broken"
        if ds.get("apiVersion") != 1:
            self.fail("%s: apiVersion must be 1" % ds_file)
        proms = [d for d in ds.get("datasources", []) if d.get("type") == "prometheus"]
        if not any(d.get("uid") == "prometheus" and d.get("url") == "http://prometheus:9090"
                   and d.get("isDefault") for d in proms):
            self.fail("%s: need a default prometheus datasource, uid prometheus, "
                      "url http://prometheus:9090" % ds_file)
        if db.get("apiVersion") != 1:
            self.fail("%s: apiVersion must be 1" % db_file)
        paths = [p.get("options", {}).get("path") for p in db.get("providers", [])]
        if "/var/lib/grafana/dashboards" not in paths:
            self.fail("%s: no provider loads /var/lib/grafana/dashboards" % db_file)
        return "provisioning OK"


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DASHBOARD
    c = Checker()
    try:
        with open(path) as fh:
            dash = json.load(fh)
    except (OSError, ValueError) as e:
        print("check-dashboard: FAIL: cannot load %s: %s" % (path, e), file=sys.stderr)
        return 1
    if dash.get("uid") != "churnwatch":
        c.fail("dashboard uid is %r, want 'churnwatch'" % dash.get("uid"))
    if not dash.get("title"):
        c.fail("dashboard has no title")
    nvars = c.check_templating(dash)
    panels = c.check_panels(dash)
    prov = c.check_provisioning()
    if c.failures:
        for f in c.failures:
            print("check-dashboard: FAIL: %s" % f, file=sys.stderr)
        print("check-dashboard: %d problem(s) in %s" % (len(c.failures), path),
              file=sys.stderr)
        return 1
    rows = sum(1 for p in panels if p.get("type") == "row")
    print("check-dashboard: OK: %s: %d panels (%d rows), %d queries over %d metric names, "
          "%d variables; %s" % (os.path.relpath(path), len(panels), rows, c.queries,
                                len(c.metrics), nvars, prov))
    return 0


if __name__ == "__main__":
    sys.exit(main())
