"""The Prometheus side of the deployment agrees with the code and the docs: every metric that an
alert, the ServiceMonitor's relabelings, ws-edge's autoscaler or the prometheus-adapter rule
names is one a service exports (or one of the few that other exporters provide, named below),
the alerts of the PrometheusRule are those of docs/operations.md's table, and the
ServiceMonitor scrapes every service, under the job names the alerts use.

What a service exports is read from the code, not listed here: the services' packages are
imported in a fresh interpreter and prometheus_client's registry read; a family belongs to the
service whose package holds it (chat_common's and the process collectors' to all of them)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import promql_parser
import pytest
import yaml

from .conftest import OVERLAYS, render

PROMETHEUS_COMPONENT = "prometheus"
# Metrics the alerts read that come from elsewhere than the services, with where from.
EXTERNAL_METRICS = {
    "up": "Prometheus itself, one series per scrape target",
    "rabbitmq_queue_messages_ready": "RabbitMQ's rabbitmq_prometheus plugin",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "kube_deployment_spec_replicas": "kube-state-metrics",
}
# Labels prometheus-operator gives every target of a ServiceMonitor.
TARGET_LABELS = {"job", "instance", "namespace", "service", "pod", "container", "endpoint"}
# The sample names of a family, by its type (what the text exposition format writes).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}

# Run in a fresh interpreter: import every module of each service's package (not __main__,
# which would start it), then describe prometheus_client's registry: every family, its type,
# its label names (a labelled family with no child yet has no sample to read them from, so
# they come from the metric objects), and the packages whose modules hold that metric object
# (the one defining it, and those importing it by name). Families of no package (the process
# and platform collectors) are served by every service.
_SCAN = """
import importlib, json, pkgutil, sys
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

for top in sys.argv[1:]:
    package = importlib.import_module(top)
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            importlib.import_module(info.name)
objects = {}
for name, module in list(sys.modules.items()):
    for value in list(vars(module).values()):
        if isinstance(value, MetricWrapperBase):
            entry = objects.setdefault(value._name, {"labels": list(value._labelnames)})
            entry.setdefault("packages", set()).add(name.split(".")[0])
families = {}
for family in REGISTRY.collect():
    entry = objects.get(family.name, {})
    labels = set(entry.get("labels", []))
    for sample in family.samples:
        labels |= set(sample.labels)
    families[family.name] = {
        "type": family.type,
        "labels": sorted(labels),
        "packages": sorted(entry.get("packages", [])),
    }
print(json.dumps(families))
"""
# What every service imports: its families are served by each of them.
SHARED_PACKAGE = "chat_common"


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    labels: frozenset[str]

    @property
    def samples(self) -> set[str]:
        return {self.name + suffix for suffix in SUFFIXES[self.type]}


@pytest.fixture(scope="module")
def exported(deploy: Any) -> dict[str, dict[str, Family]]:
    """Service name -> sample name -> its family, for every server deployed to Kubernetes: the
    families its own package holds, chat_common's, and the process and platform ones."""
    servers = {d.module: d.name for d in deploy.DEPLOYABLES if d.k8s == "Deployment"}
    run = subprocess.run(
        [sys.executable, "-c", _SCAN, SHARED_PACKAGE, *servers],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"scanning the services' metrics failed:\n{run.stderr}"
    found: dict[str, dict[str, Family]] = {name: {} for name in servers.values()}
    for family_name, data in json.loads(run.stdout).items():
        family = Family(family_name, data["type"], frozenset(data["labels"]))
        owners = set(data["packages"])
        assert owners <= {SHARED_PACKAGE, *servers}, f"{family_name}: held by {owners}"
        for module, name in servers.items():
            if not owners or SHARED_PACKAGE in owners or module in owners:
                found[name].update(dict.fromkeys(family.samples, family))
    return found


@pytest.fixture(scope="module")
def every_sample(exported: dict[str, dict[str, Family]]) -> dict[str, Family]:
    return {name: f for samples in exported.values() for name, f in samples.items()}


def test_the_scan_reads_each_services_metrics(exported: dict[str, dict[str, Family]]) -> None:
    """The scan is no empty set: known families, with their label names, where they live."""
    assert exported["gateway"]["chat_http_requests_total"].labels == {
        "service",
        "method",
        "route",
        "status",
    }
    assert "chat_ws_connections" in exported["ws-edge"]
    assert "chat_ws_connections" not in exported["gateway"]
    assert "chat_outbox_dead_total" in exported["outbox-relay"]
    assert "process_cpu_seconds_total" in exported["message-svc"]


# ---- reading PromQL -------------------------------------------------------------------------


def _selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def _metric(selector: promql_parser.VectorSelector) -> str:
    if selector.name:
        return str(selector.name)
    (name,) = [m.value for m in selector.matchers.matchers if m.name == "__name__"]
    return str(name)


def _normal(expr: str) -> str:
    """An expression as the parser prints it back: spacing and line breaks do not count."""
    return str(promql_parser.parse(expr))


# ---- the alerts -----------------------------------------------------------------------------


def _monitored() -> list[str]:
    return [o for o in OVERLAYS if PROMETHEUS_COMPONENT in render(o).components]


@pytest.fixture(scope="module", params=_monitored())
def monitored(request: pytest.FixtureRequest) -> Any:
    """An overlay that turns the prometheus component on."""
    return render(str(request.param))


def test_an_overlay_turns_the_prometheus_component_on() -> None:
    assert _monitored(), "no overlay renders the ServiceMonitor and the alerts"


def _rules(manifests: Any) -> dict[str, dict[str, Any]]:
    (rule,) = manifests.of_kind("PrometheusRule")
    alerts = {}
    for group in rule["spec"]["groups"]:
        for entry in group["rules"]:
            assert entry["alert"] not in alerts, f"{entry['alert']} twice"
            alerts[entry["alert"]] = entry
    return alerts


def test_every_alert_expression_parses_and_reads_exported_metrics(
    monitored: Any, every_sample: dict[str, Family]
) -> None:
    for name, rule in _rules(monitored).items():
        for selector in _selectors(str(rule["expr"])):
            metric = _metric(selector)
            if metric in EXTERNAL_METRICS:
                continue
            assert metric in every_sample, f"{name} reads {metric}, which no service exports"
            family = every_sample[metric]
            known = (
                family.labels | TARGET_LABELS | ({"le"} if metric.endswith("_bucket") else set())
            )
            for matcher in selector.matchers.matchers:
                assert matcher.name in known, f"{name}: {metric} has no label {matcher.name}"


def test_external_metrics_are_not_ours(every_sample: dict[str, Family]) -> None:
    for metric in EXTERNAL_METRICS:
        assert not metric.startswith("chat_")
        assert metric not in every_sample


def test_every_alert_has_a_severity_and_a_summary(monitored: Any, deploy: Any) -> None:
    operations = (deploy.ROOT / "docs" / "operations.md").read_text()
    for name, rule in _rules(monitored).items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"], name
        if "runbook" in rule["annotations"]:
            heading = re.escape(rule["annotations"]["runbook"])
            assert re.search(rf"^#+ {heading}$", operations, re.MULTILINE), name


def _alert_table(operations: str) -> dict[str, dict[str, str]]:
    """docs/operations.md's alert table: name -> expression, for, severity."""
    section = operations.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in re.split(r"(?<!\\)\|", rows[0])[1:-1]]
    table = {}
    for row in rows[1:]:
        cells = dict(
            zip(header, (c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]), strict=True)
        )
        match = re.match(r"`([^`]+)`", cells["expression"])
        assert match, f"no expression in {row}"
        name = cells["alert"]
        assert name not in table, name
        table[name] = {
            "expr": match.group(1).replace("\\|", "|"),
            "for": cells["for"],
            "severity": cells["severity"],
        }
    return table


def test_the_alert_table_and_the_prometheus_rule_agree(monitored: Any, deploy: Any) -> None:
    table = _alert_table((deploy.ROOT / "docs" / "operations.md").read_text())
    rules = _rules(monitored)
    assert list(table) == list(rules), "the same alerts, in the same order"
    for name, documented in table.items():
        rule = rules[name]
        assert _normal(documented["expr"]) == _normal(str(rule["expr"])), name
        assert documented["for"] == rule.get("for", "0m"), name
        assert documented["severity"] == rule["labels"]["severity"], name


# ---- the ServiceMonitor ---------------------------------------------------------------------


def _service_monitor(manifests: Any) -> dict[str, Any]:
    (monitor,) = manifests.of_kind("ServiceMonitor")
    return dict(monitor)


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels; matchExpressions In/NotIn/Exists/
    DoesNotExist) against ``labels``."""
    assert set(selector) <= {"matchLabels", "matchExpressions"}
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def _selected_services(manifests: Any, monitor: dict[str, Any]) -> list[dict[str, Any]]:
    assert "namespaceSelector" not in monitor["spec"], "the chat namespace only"
    return [
        s
        for s in manifests.of_kind("Service")
        if _matches(monitor["spec"]["selector"], s["metadata"].get("labels") or {})
    ]


def test_the_service_monitor_scrapes_every_service(monitored: Any, deploy: Any) -> None:
    monitor = _service_monitor(monitored)
    services = _selected_services(monitored, monitor)
    servers = {d.name for d in deploy.DEPLOYABLES if d.k8s == "Deployment"}
    assert {s["metadata"]["name"] for s in services} == servers
    (endpoint,) = monitor["spec"]["endpoints"]
    for service in services:
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["port"] in ports, service["metadata"]["name"]
        deployable = deploy.BY_NAME[service["metadata"]["name"]]
        pod = monitored.workload(deployable)["spec"]["template"]["metadata"]
        assert endpoint["path"] == pod["annotations"]["prometheus.io/path"]
        job_label = monitor["spec"]["jobLabel"]
        assert service["metadata"]["labels"][job_label] == service["metadata"]["name"]
    for label in monitor["spec"].get("podTargetLabels", []):
        for service in services:
            deployable = deploy.BY_NAME[service["metadata"]["name"]]
            assert label in monitored.workload(deployable)["spec"]["template"]["metadata"]["labels"]


def test_alerts_name_the_jobs_the_service_monitor_makes(monitored: Any) -> None:
    monitor = _service_monitor(monitored)
    jobs = {
        s["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        for s in _selected_services(monitored, monitor)
    }
    for name, rule in _rules(monitored).items():
        for selector in _selectors(str(rule["expr"])):
            for matcher in selector.matchers.matchers:
                if matcher.name == "job":
                    assert matcher.op == promql_parser.MatchOp.Equal, name
                    assert matcher.value in jobs, f"{name}: no job {matcher.value}"


def _metrics_read(manifests: Any) -> set[str]:
    """Every metric the alerts and the autoscalers read."""
    read = {
        _metric(s) for rule in _rules(manifests).values() for s in _selectors(str(rule["expr"]))
    }
    for hpa in manifests.of_kind("HorizontalPodAutoscaler"):
        read |= {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    return read


def test_the_service_monitor_relabelings_name_exported_metrics_and_keep_the_read_ones(
    monitored: Any, every_sample: dict[str, Family]
) -> None:
    (endpoint,) = _service_monitor(monitored)["spec"]["endpoints"]
    read = _metrics_read(monitored)
    relabelings = endpoint.get("metricRelabelings", []) + endpoint.get("relabelings", [])
    by_name = [r for r in relabelings if r.get("sourceLabels") == ["__name__"]]
    assert by_name, "expected the ServiceMonitor to drop series by name"
    for relabeling in by_name:
        pattern = re.compile(relabeling["regex"])  # Prometheus anchors it at both ends
        matched = {s for s in every_sample if pattern.fullmatch(s)}
        assert matched, f"{relabeling['regex']} names no exported metric"
        if relabeling["action"] == "drop":
            assert not matched & read, f"{relabeling['regex']} drops {matched & read}"
        elif relabeling["action"] == "keep":
            assert read - set(EXTERNAL_METRICS) <= matched, relabeling["regex"]


def test_honor_labels_where_a_metric_label_is_also_a_target_label(
    monitored: Any, every_sample: dict[str, Family]
) -> None:
    """chat_http_* carry `service`; without honorLabels Prometheus would rename it
    exported_service and put the Kubernetes Service's name in its place."""
    (endpoint,) = _service_monitor(monitored)["spec"]["endpoints"]
    colliding = {f.name for f in every_sample.values() if f.labels & TARGET_LABELS}
    assert "chat_http_requests" in colliding
    assert endpoint.get("honorLabels") is True


# ---- ws-edge on connections per pod ---------------------------------------------------------


def _pods_metrics(manifests: Any, name: str) -> list[dict[str, Any]]:
    hpa = manifests.get("HorizontalPodAutoscaler", name)
    return [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]


def test_ws_edge_scales_on_connections_per_pod_and_on_cpu(
    monitored: Any, exported: dict[str, dict[str, Family]]
) -> None:
    metrics = monitored.get("HorizontalPodAutoscaler", "ws-edge")["spec"]["metrics"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics)
    (pods,) = _pods_metrics(monitored, "ws-edge")
    name = pods["pods"]["metric"]["name"]
    assert exported["ws-edge"][name].type == "gauge", f"{name}: open connections, a gauge"
    assert pods["pods"]["target"]["type"] == "AverageValue"
    assert int(pods["pods"]["target"]["averageValue"]) > 0


def test_only_overlays_with_the_adapter_scale_on_pod_metrics(deploy: Any) -> None:
    """Without prometheus-adapter a Pods metric cannot be read, and an autoscaler that cannot
    read one of its metrics never scales down: only the prometheus component adds it."""
    for overlay in deploy.OVERLAYS:
        rendered = deploy.render(overlay)
        with_pods = {
            h["metadata"]["name"]
            for h in rendered.of_kind("HorizontalPodAutoscaler")
            if any(m["type"] != "Resource" for m in h["spec"]["metrics"])
        }
        expected = {"ws-edge"} if PROMETHEUS_COMPONENT in rendered.components else set()
        assert with_pods == expected, overlay


def _adapter_rules(operations: str) -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", operations, re.DOTALL)
    rules = [r for b in blocks if "seriesQuery" in b for r in yaml.safe_load(b)["rules"]]
    assert rules, "docs/operations.md shows no prometheus-adapter rule"
    return rules


def test_the_adapter_rule_in_the_docs_serves_the_autoscalers_metric(
    monitored: Any, deploy: Any, exported: dict[str, dict[str, Family]]
) -> None:
    operations = (deploy.ROOT / "docs" / "operations.md").read_text()
    (pods,) = _pods_metrics(monitored, "ws-edge")
    name = pods["pods"]["metric"]["name"]
    (rule,) = [r for r in _adapter_rules(operations) if r["name"]["as"] == name]
    (selector,) = _selectors(rule["seriesQuery"])
    series = _metric(selector)
    assert series in exported["ws-edge"], f"the adapter reads {series}, which ws-edge lacks"
    assert re.fullmatch(rule["name"]["matches"], series)
    overrides = rule["resources"]["overrides"]
    assert overrides == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }, "per pod, by the labels the ServiceMonitor's targets carry"
    assert set(overrides) <= TARGET_LABELS
    assert "<<.Series>>" in rule["metricsQuery"]
    assert "<<.LabelMatchers>>" in rule["metricsQuery"]
    assert "prometheus-adapter" in operations
