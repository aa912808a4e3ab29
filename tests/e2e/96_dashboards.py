"""docs/prometheus-alerts.yml passes `promtool check rules` (when promtool is
installed: Debian's prometheus package, about 100 MB with its dependencies,
is not in `make deps`; the test says so when it skips), and every metric the
alerting rules and docs/grafana-dashboard.json name is one the daemon
exposes (checked against a live /metrics) and docs/OPERATIONS.md documents."""
import json
import os
import re
import shutil
import subprocess

import camtest
from camtest import ROOT, Daemon, Sim

ALERTS = os.path.join(ROOT, "docs", "prometheus-alerts.yml")
DASHBOARD = os.path.join(ROOT, "docs", "grafana-dashboard.json")
# Names in expressions that are PromQL, not camskeyd metrics.
NOT_METRICS = {"up", "sum", "by", "rate", "increase", "histogram_quantile", "and", "or",
               "label_values", "le", "instance", "result", "code", "client", "job"}


def referenced(exprs):
    names = set()
    for e in exprs:
        e = re.sub(r'"[^"]*"', '""', e)  # label values
        e = re.sub(r"\{[^}]*\}", "", e)   # label matchers
        e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
        for n in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
            if n not in NOT_METRICS:
                names.add(re.sub(r"_(bucket|sum|count)$", "", n))
    return names


def exposed_families():
    """Every family /metrics announces (# TYPE), samples or not (per-client ones)."""
    sim = Sim()
    d = Daemon(sim.url)
    status, _, body = d.get("/metrics")
    assert status == 200
    return set(re.findall(r"^# TYPE (\S+) ", body.decode(), re.M))


def operations_md():
    with open(os.path.join(ROOT, "docs", "OPERATIONS.md")) as f:
        return f.read()


def test_alerting_rules_pass_promtool():
    if not shutil.which("promtool"):
        camtest.skip("promtool is not installed (apt-get install prometheus; not in make deps: "
                     "large, and the metric names are checked below anyway)")
    r = subprocess.run(["promtool", "check", "rules", ALERTS], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_alerting_rules_name_only_existing_metrics():
    with open(ALERTS) as f:
        text = f.read()
    exprs = [m.group(1) for m in re.finditer(r"expr: (.+)", text) if m.group(1) != ">"]
    # folded (>) expressions: the indented lines after "expr: >"
    exprs += [m.group(1) for m in re.finditer(r"expr: >\n((?:\s{10}.+\n)+)", text)]
    names = referenced(exprs)
    assert names, "no metric found in the rules"
    exposed, docs = exposed_families(), operations_md()
    for n in sorted(names):
        assert n in exposed, "%s (in the alerting rules) is not exposed" % n
        assert "`%s`" % n in docs, "%s is not in docs/OPERATIONS.md" % n
    for alert in ("CamskeydUpstreamThrottled", "CamskeydLowHitRatio", "CamskeydQueueSaturated",
                  "CamskeydUpstreamErrors", "CamskeydNotReady"):
        assert "alert: %s\n" % alert in text, alert


def test_dashboard_parses_and_names_only_existing_metrics():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10, exprs
    names = referenced(exprs)
    exposed, docs = exposed_families(), operations_md()
    for n in sorted(names):
        assert n in exposed, "%s (in the dashboard) is not exposed" % n
        assert "`%s`" % n in docs, "%s is not in docs/OPERATIONS.md" % n
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), ids


camtest.main(globals())
