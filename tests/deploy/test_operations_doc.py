"""docs/operations.md keeps up with the code: every Prometheus metric the services define is
explained there, and the runbooks the deployment issue asks for exist."""

from __future__ import annotations

import re
from typing import Any

import pytest

METRIC = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")


def _defined_metrics(deploy: Any) -> dict[str, str]:
    found = {}
    roots = [deploy.ROOT / "libs/common/src", *sorted((deploy.ROOT / "services").glob("*/src"))]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for name in METRIC.findall(path.read_text()):
                found[name] = str(path.relative_to(deploy.ROOT))
    return found


@pytest.fixture(scope="module")
def operations(deploy: Any) -> str:
    return str((deploy.ROOT / "docs" / "operations.md").read_text())


def test_every_metric_in_the_code_is_explained(deploy: Any, operations: str) -> None:
    metrics = _defined_metrics(deploy)
    assert "chat_http_requests_total" in metrics, "the metric scan found nothing"
    missing = {m: where for m, where in metrics.items() if f"`{m}`" not in operations}
    assert not missing, f"docs/operations.md does not explain {missing}"


@pytest.mark.parametrize(
    "heading",
    [
        "Deploying",
        "Scaling",
        "Metrics",
        "Alerts",
        "Runbook: outbox backlog",
        "Runbook: dead outbox rows",
        "Runbook: RabbitMQ down",
        "Runbook: PostgreSQL failover",
        "Runbook: rotating keys",
    ],
)
def test_the_sections_exist(operations: str, heading: str) -> None:
    assert re.search(rf"^#+ {re.escape(heading)}", operations, re.MULTILINE), heading
