#!/usr/bin/env python3
"""Static checks of deploy/ with real tools, for a machine without Docker or
Kubernetes (see deploy/README.md for what this does and does not exercise).

    python3 scripts/check_deploy.py --binary BIN --metrics SCRAPE [--write]

- every YAML file under deploy/ parses;
- deploy/k8s/prometheusrule.yaml carries exactly deploy/prometheus/rules.yml
  (`--write` regenerates it);
- docker-compose: bind-mount sources, build context and Dockerfile exist;
  every service running the churnwatch image has arguments the real binary
  accepts, and the config files it mounts pass `churnwatch run --check-config`;
- Kubernetes: the StatefulSet's container args are accepted by the binary,
  the ConfigMap's TOML passes `--check-config`, every volume mount has a
  volume, probes and the Service point at a declared container port, the
  PDB / Service / ServiceMonitor selectors match the pod labels;
- the Dockerfile COPYs only paths that exist and runs as a non-root user;
- every churnwatch_* metric used by the rules and the dashboard is in a real
  scrape of `churnwatch run` (`--metrics`, taken by scripts/check-deploy.sh).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")


def ok(msg):
    print(f"ok   {msg}")


def load_all_yaml():
    docs = {}
    for dirpath, _, files in os.walk(DEPLOY):
        for f in sorted(files):
            if f.endswith((".yml", ".yaml")):
                p = os.path.join(dirpath, f)
                try:
                    with open(p) as fh:
                        docs[os.path.relpath(p, ROOT)] = list(yaml.safe_load_all(fh))
                except yaml.YAMLError as e:
                    fail(f"{os.path.relpath(p, ROOT)}: YAML does not parse: {e}")
    ok(f"{len(docs)} YAML files under deploy/ parse")
    return docs


def check_prometheusrule(write):
    with open(os.path.join(DEPLOY, "prometheus/rules.yml")) as fh:
        rules = yaml.safe_load(fh)
    path = os.path.join(DEPLOY, "k8s/prometheusrule.yaml")
    want = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "churnwatch", "labels": {"app.kubernetes.io/name": "churnwatch"}},
        "spec": rules,
    }
    if write:
        with open(path, "w") as fh:
            fh.write("# Generated from deploy/prometheus/rules.yml by\n")
            fh.write("#   python3 scripts/check_deploy.py --write\n")
            fh.write("# Edit rules.yml (it has the unit tests), not this file.\n")
            yaml.safe_dump(want, fh, sort_keys=False, width=100)
    with open(path) as fh:
        have = yaml.safe_load(fh)
    if have != want:
        fail("deploy/k8s/prometheusrule.yaml differs from deploy/prometheus/rules.yml "
             "(run: python3 scripts/check_deploy.py --write)")
    else:
        ok("k8s PrometheusRule carries exactly deploy/prometheus/rules.yml")


def accepts_args(binary, args, what):
    """clap validates every flag and value before acting on --help, so
    `ARGS --help` exiting 0 proves the binary accepts ARGS."""
    r = subprocess.run([binary, *args, "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{what}: the binary rejects {args}: {r.stderr.strip().splitlines()[0:1]}")
    else:
        ok(f"{what}: binary accepts `{' '.join(args)}`")


def check_config_toml(binary, toml_text, what, env=None):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write(toml_text)
        path = fh.name
    try:
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("CHURNWATCH_"):
                del e[k]
        e.update(env or {})
        r = subprocess.run([binary, "run", "--config", path, "--check-config"],
                           capture_output=True, text=True, env=e)
        if r.returncode != 0:
            fail(f"{what}: config rejected: {r.stderr.strip()}")
        else:
            ok(f"{what}: {r.stdout.strip()}")
    finally:
        os.unlink(path)


def check_compose(binary, docs):
    compose = docs["deploy/docker-compose.yml"][0]
    base = DEPLOY
    image = None
    for name, svc in compose["services"].items():
        if "build" in svc:
            ctx = os.path.normpath(os.path.join(base, svc["build"]["context"]))
            df = os.path.join(ctx, svc["build"]["dockerfile"])
            if not os.path.isfile(df):
                fail(f"compose service {name}: Dockerfile {df} missing")
            else:
                ok(f"compose service {name}: builds {os.path.relpath(df, ROOT)}")
            image = svc.get("image")
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith((".", "/")):
                p = os.path.normpath(os.path.join(base, src))
                if not os.path.exists(p):
                    fail(f"compose service {name}: mounts missing {src}")
                else:
                    ok(f"compose service {name}: mount source {src} exists")
            elif src not in (compose.get("volumes") or {}):
                fail(f"compose service {name}: named volume {src} not declared")
        for dep in svc.get("depends_on", []):
            if dep not in compose["services"]:
                fail(f"compose service {name}: depends on unknown service {dep}")
    for name, svc in compose["services"].items():
        if svc.get("image") == image and "command" in svc:
            accepts_args(binary, svc["command"], f"compose service {name}")
            cmd = svc["command"]
            if cmd[0] == "run" and "--config" in cmd:
                target = cmd[cmd.index("--config") + 1]
                for v in svc.get("volumes", []):
                    parts = v.split(":")
                    if parts[1] == target:
                        with open(os.path.normpath(os.path.join(base, parts[0]))) as fh:
                            check_config_toml(binary, fh.read(), f"compose service {name} config",
                                              {k: str(x) for k, x in (svc.get("environment") or {}).items()})
    # Prometheus in compose must load the rules file it mounts.
    prom = compose["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"]}
    with open(os.path.join(base, mounts["/etc/prometheus/prometheus.yml"])) as fh:
        pcfg = yaml.safe_load(fh)
    for rf in pcfg.get("rule_files", []):
        if rf not in mounts:
            fail(f"prometheus.yml loads {rf}, which compose does not mount")
    jobs = [j["job_name"] for j in pcfg["scrape_configs"]]
    if "churnwatch" not in jobs:
        fail("prometheus.yml has no scrape job named churnwatch (the rules select job=\"churnwatch\")")
    else:
        ok("compose Prometheus scrapes job churnwatch and mounts its rule files")


def check_k8s(binary, docs):
    objs = {}
    for path, ds in docs.items():
        if path.startswith("deploy/k8s/"):
            for d in ds:
                if d and "kind" in d:
                    objs[d["kind"]] = d
    kust = docs["deploy/k8s/kustomization.yaml"][0]
    for r in kust["resources"]:
        if not os.path.isfile(os.path.join(DEPLOY, "k8s", r)):
            fail(f"kustomization lists missing {r}")
    ok(f"kustomization resources exist ({len(kust['resources'])})")

    sts = objs["StatefulSet"]
    pod = sts["spec"]["template"]
    labels = pod["metadata"]["labels"]
    c = pod["spec"]["containers"][0]
    accepts_args(binary, c["args"], "StatefulSet container")
    cm = objs["ConfigMap"]
    env = {e["name"]: e.get("value", "pod-0") for e in c.get("env", [])}
    env = {k: v for k, v in env.items() if k.startswith("CHURNWATCH_")}
    env["CHURNWATCH_KAFKA_GROUP_INSTANCE_ID"] = "churnwatch-0"
    for key, text in cm["data"].items():
        check_config_toml(binary, text, f"ConfigMap {key}", env)
    cfg_arg = c["args"][c["args"].index("--config") + 1]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"] for v in pod["spec"].get("volumes", [])}
    vols |= {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    for n in mounts:
        if n not in vols:
            fail(f"StatefulSet mounts volume {n} that is neither a volume nor a claim template")
    cfg_vol = next(v for v in pod["spec"]["volumes"] if v["name"] == "config")
    if cfg_vol["configMap"]["name"] != cm["metadata"]["name"] or \
            os.path.join(mounts["config"], os.path.basename(cfg_arg)) != cfg_arg or \
            os.path.basename(cfg_arg) not in cm["data"]:
        fail(f"--config {cfg_arg} is not a key of the mounted ConfigMap")
    else:
        ok(f"--config {cfg_arg} comes from ConfigMap {cm['metadata']['name']}")
    state_dir = env.get("CHURNWATCH_STATE_DIR")
    if mounts.get("state") != state_dir:
        fail(f"state volume mounted at {mounts.get('state')} but CHURNWATCH_STATE_DIR is {state_dir}")
    ports = {p["name"] for p in c["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        port = c[probe]["httpGet"]["port"]
        if port not in ports:
            fail(f"{probe} uses undeclared port {port}")
    if c["readinessProbe"]["httpGet"]["path"] != "/readyz" or c["livenessProbe"]["httpGet"]["path"] != "/healthz":
        fail("probes must use /readyz (readiness) and /healthz (liveness)")
    else:
        ok("probes use /healthz and /readyz on a declared port")
    for kind in ("Service", "PodDisruptionBudget", "ServiceMonitor"):
        sel = objs[kind]["spec"]["selector"]
        sel = sel.get("matchLabels", sel)
        if kind == "ServiceMonitor":
            target = objs["Service"]["metadata"]["labels"]
        else:
            target = labels
        if not all(target.get(k) == v for k, v in sel.items()):
            fail(f"{kind} selector {sel} does not match {target}")
    ok("Service, PDB and ServiceMonitor selectors match")
    if objs["ServiceMonitor"]["spec"]["endpoints"][0]["port"] not in {p["name"] for p in objs["Service"]["spec"]["ports"]}:
        fail("ServiceMonitor endpoint port is not a Service port")
    sc = pod["spec"].get("securityContext", {})
    if not sc.get("runAsNonRoot"):
        fail("pod must run as non-root")
    if "limits" not in c.get("resources", {}):
        fail("container has no resource limits")


def check_dockerfile():
    path = os.path.join(DEPLOY, "Dockerfile")
    text = open(path).read()
    stages = len(re.findall(r"^FROM ", text, re.M))
    if stages < 2:
        fail("Dockerfile is not multi-stage")
    for m in re.finditer(r"^COPY (?!--from)(.+)$", text, re.M):
        for src in m.group(1).split()[:-1]:
            if not os.path.exists(os.path.join(ROOT, src)):
                fail(f"Dockerfile copies missing {src}")
    check_placeholder_crate(text)
    users = re.findall(r"^USER (\S+)", text, re.M)
    if not users or users[-1].split(":")[0] in ("0", "root"):
        fail("Dockerfile's runtime stage must switch to a non-root USER")
    ok(f"Dockerfile: {stages} stages, COPY sources exist, runs as USER {users[-1] if users else '?'}")


def check_placeholder_crate(text):
    """The dependency layer compiles a placeholder crate from Cargo.toml
    alone; cargo stops at the manifest if a target it names has no file.
    Runs the step's shell commands (those before its `cargo build`) in a
    scratch directory and checks every bench and binary is there."""
    m = re.search(r"^RUN (mkdir -p src benches.*?)&& cargo build", text, re.M | re.S)
    if not m:
        fail("Dockerfile: no placeholder-crate step (RUN mkdir -p src benches ... && cargo build)")
        return
    script = m.group(1).replace("\\\n", " ")
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as fh:
        manifest = tomllib.load(fh)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(ROOT, "Cargo.toml")) as src, open(os.path.join(d, "Cargo.toml"), "w") as dst:
            dst.write(src.read())
        subprocess.run(["sh", "-ec", script], cwd=d, check=True)
        targets = [(b["name"], b.get("path", f"benches/{b['name']}.rs")) for b in manifest.get("bench", [])]
        targets += [(b["name"], b.get("path", "src/main.rs")) for b in manifest.get("bin", [])]
        missing = [name for name, path in targets if not os.path.exists(os.path.join(d, path))]
    if missing:
        fail(f"Dockerfile's placeholder crate lacks {', '.join(missing)}: cargo would stop at the manifest")
    else:
        ok(f"Dockerfile: placeholder crate has all {len(targets)} bench and binary targets of Cargo.toml")


def metrics_of(scrape):
    """Metric families in a real /metrics scrape of `churnwatch run`."""
    with open(scrape) as fh:
        return set(re.findall(r"^# TYPE (churnwatch_[a-z_]+) ", fh.read(), re.M))


# Families labelled by partition have no sample, so no `# TYPE` line, until
# partitions are assigned; the live scrape runs without a broker. They are
# checked against the names the telemetry module registers instead.
PER_PARTITION = {
    "churnwatch_consumer_lag",
    "churnwatch_stream_clock_seconds",
    "churnwatch_stream_clock_lag_seconds",
}


def registered_in_source():
    text = open(os.path.join(ROOT, "src/telemetry/mod.rs")).read()
    return set(re.findall(r'"(churnwatch_[a-z_]+)"', text))


def check_metric_names(scrape):
    known = metrics_of(scrape)
    registered = registered_in_source()
    for n in sorted(PER_PARTITION):
        if n in registered:
            known.add(n)
        else:
            fail(f"per-partition metric {n} is not registered in src/telemetry/mod.rs")
    used = {}
    rules = open(os.path.join(DEPLOY, "prometheus/rules.yml")).read()
    used["rules.yml"] = set(re.findall(r"\b(churnwatch_[a-z_]+)", rules))
    dash = json.load(open(os.path.join(DEPLOY, "grafana/churnwatch.json")))
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            if "expr" in o and isinstance(o["expr"], str):
                exprs.append(o["expr"])
            if "query" in o and isinstance(o["query"], str):
                exprs.append(o["query"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash)
    used["churnwatch.json"] = set(re.findall(r"\b(churnwatch_[a-z_]+)", "\n".join(exprs)))
    for where, names in used.items():
        for n in sorted(names):
            base = re.sub(r"_(bucket|sum|count)$", "", n)
            if n not in known and base not in known:
                fail(f"{where} uses metric {n}, which churnwatch does not export")
        ok(f"{where}: all {len(names)} metric names exist")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--metrics", required=True, help="a /metrics scrape of churnwatch run")
    ap.add_argument("--write", action="store_true", help="regenerate prometheusrule.yaml")
    a = ap.parse_args()
    docs = load_all_yaml()
    check_prometheusrule(a.write)
    check_compose(a.binary, docs)
    check_k8s(a.binary, docs)
    check_dockerfile()
    check_metric_names(a.metrics)
    if failures:
        print(f"\n{len(failures)} deploy check(s) failed")
        sys.exit(1)
    print("\ndeploy checks passed")


if __name__ == "__main__":
    main()
