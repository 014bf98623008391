"""Write the JSON Schemas of the two prometheus-operator kinds the manifests use
(monitoring.coreos.com/v1 ServiceMonitor and PrometheusRule) next to this file.

The schemas come from a package of the Python registry, not from a cluster: cloudcoil's code
generator turned the CustomResourceDefinitions of one prometheus-operator release into pydantic
models (cloudcoil-models-prometheus-operator, Apache-2.0; its version is the operator's, with
one more digit), and pydantic exports them back as JSON Schema: the CRD's fields, types, enums,
patterns and required lists. The deploy tests load these files and make them strict (an unknown
field is an error); they do not import cloudcoil, which would add a pytest plugin to every run.

Run it again for another operator release (outside the project's environment):

    uv run --no-project --with 'cloudcoil-models-prometheus-operator==0.80.1.0' \\
        python tests/deploy/schemas/regenerate.py
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from cloudcoil.models.prometheus_operator import v1  # type: ignore[import-not-found]

PACKAGE = "cloudcoil-models-prometheus-operator"
HERE = Path(__file__).resolve().parent


def main() -> None:
    release = version(PACKAGE)
    operator = "v" + ".".join(release.split(".")[:3])
    for model in (v1.ServiceMonitor, v1.PrometheusRule):
        schema = {
            "$comment": (
                f"monitoring.coreos.com/v1 {model.__name__}: the prometheus-operator {operator} "
                f"CRD as generated into {PACKAGE} {release}, exported by pydantic; written by "
                "tests/deploy/schemas/regenerate.py. Do not edit by hand."
            ),
            **model.model_json_schema(by_alias=True),
        }
        path = HERE / f"{model.__name__.lower()}.json"
        path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(f"{path.name}: {model.__name__} of prometheus-operator {operator}")


if __name__ == "__main__":
    main()
