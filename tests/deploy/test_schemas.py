"""The deployment files are valid for the tools that read them: every Kubernetes object the base
and each overlay render against the API's JSON schemas (kubernetes-validate, strict: an unknown
field is an error), the prometheus-operator kinds (ServiceMonitor, PrometheusRule) against the
schemas of their CRDs in tests/deploy/schemas (made strict the same way; regenerate.py there
says where they come from), and docker-compose.yml against the Compose Specification's schema
(the copy vendored, with its Apache-2.0 licence, in check-jsonschema). Every schema is on disk:
no network. The layout is checked too: one base, overlays over it, components that overlays
switch on, no file left out of its kustomization."""

from __future__ import annotations

import functools
import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from .conftest import OVERLAYS, render

# The oldest Kubernetes these manifests are meant for, and the newest schemas shipped.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
# Custom resources: apiVersion -> the directory of their kinds' schemas (<kind>.json).
CRD_SCHEMAS = {"monitoring.coreos.com/v1": Path(__file__).parent / "schemas"}
# Go's regular expressions take a flag group anywhere; Python's only at the start.
_LATE_FLAGS = re.compile(r"^\^(\(\?[a-z]+\))")


def _strict(node: Any) -> Any:
    """The schema with every object closed (an unknown field is an error, as in
    kubernetes-validate's strict mode) and its patterns readable by Python's re."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        if isinstance(node.get("pattern"), str):
            node["pattern"] = _LATE_FLAGS.sub(r"\1^", node["pattern"])
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


@functools.cache
def _crd_validator(api_version: str, kind: str) -> Any:
    path = CRD_SCHEMAS[api_version] / f"{kind.lower()}.json"
    schema = _strict(json.loads(path.read_text()))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def _errors(objects: list[dict[str, Any]], version: str) -> list[str]:
    errors = []
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"] in CRD_SCHEMAS:
            try:
                validator = _crd_validator(obj["apiVersion"], obj["kind"])
            except FileNotFoundError:
                errors.append(f"{name}: no schema for {obj['apiVersion']} {obj['kind']}")
                continue
            for error in validator.iter_errors(obj):
                path = ".".join(str(p) for p in error.absolute_path)
                errors.append(f"{name}: {path}: {error.message}")
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name}: {exc.message}")
    return errors


@pytest.mark.parametrize("variant", ["base", *OVERLAYS])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_validates(deploy: Any, variant: str, version: str) -> None:
    rendered = deploy.render(variant)
    assert len(rendered.objects) > 20
    assert _errors(rendered.objects, version) == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_secret_templates_validate(deploy: Any, version: str) -> None:
    assert _errors(deploy.secret_templates(), version) == []


def test_strict_validation_catches_a_misspelt_field(manifests: Any) -> None:
    """The validator is not a rubber stamp."""
    deployment = json.loads(json.dumps(manifests.of_kind("Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    assert _errors([deployment], K8S_VERSIONS[-1])


def _directories(deploy: Any) -> list[Path]:
    """The base and every component: the directories that hold manifests of their own."""
    return [deploy.BASE_DIR, *sorted(p for p in deploy.COMPONENTS_DIR.iterdir() if p.is_dir())]


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_the_crd_schemas_name_their_release(kind: str) -> None:
    schema = json.loads(
        (CRD_SCHEMAS["monitoring.coreos.com/v1"] / f"{kind.lower()}.json").read_text()
    )
    assert re.match(
        rf"monitoring.coreos.com/v1 {kind}: the prometheus-operator v\d+\.\d+\.\d+ CRD",
        schema["$comment"],
    )
    assert schema["properties"]["kind"]["anyOf"][0]["const"] == kind


def _custom(kind: str) -> dict[str, Any]:
    """A copy of the first rendered object of ``kind`` in an overlay."""
    for overlay in OVERLAYS:
        for obj in render(overlay).of_kind(kind):
            return dict(json.loads(json.dumps(obj)))
    raise AssertionError(f"no overlay renders a {kind}")


def test_strict_crd_validation_catches_mistakes() -> None:
    """The CRD schemas are no rubber stamp either: a misspelt field, a value outside an enum,
    a malformed duration, a rule without its expression."""
    monitor = _custom("ServiceMonitor")
    assert _errors([monitor], K8S_VERSIONS[-1]) == []
    endpoint = monitor["spec"]["endpoints"][0]
    for broken in (
        {"honourLabels": True},
        {"metricRelabelings": [{"sourceLabels": ["__name__"], "action": "dropp"}]},
        {"interval": "30 seconds"},
    ):
        wrong = json.loads(json.dumps(monitor))
        wrong["spec"]["endpoints"][0] = {**endpoint, **broken}
        assert _errors([wrong], K8S_VERSIONS[-1]), broken
    rule = _custom("PrometheusRule")
    assert _errors([rule], K8S_VERSIONS[-1]) == []
    first = rule["spec"]["groups"][0]["rules"][0]
    for broken_rule in (
        {**first, "expression": first["expr"]},
        {k: v for k, v in first.items() if k != "expr"},
        {**first, "for": "2 minutes"},
    ):
        wrong = json.loads(json.dumps(rule))
        wrong["spec"]["groups"][0]["rules"][0] = broken_rule
        assert _errors([wrong], K8S_VERSIONS[-1]), broken_rule


def test_every_manifest_file_is_in_its_kustomization(deploy: Any) -> None:
    for directory in _directories(deploy):
        kustomization = deploy.kustomization(directory)
        listed = set(kustomization.get("resources", []))
        on_disk = {p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert listed == on_disk, directory.name
        generated = {
            source
            for generator in kustomization.get("configMapGenerator", [])
            for source in generator.get("envs", []) + generator.get("files", [])
        }
        assert generated == {p.name for p in directory.glob("*.env")}, directory.name
    # Beside them only the Secrets' template, which no kustomization lists.
    assert list(deploy.K8S_DIR.glob("*.yaml")) == [deploy.SECRETS_TEMPLATE]


def test_every_overlay_builds_on_the_base_and_every_component_is_used(deploy: Any) -> None:
    used: set[str] = set()
    for overlay in deploy.OVERLAYS:
        directory = deploy.variant_dir(overlay)
        kustomization = deploy.kustomization(directory)
        assert [(directory / r).resolve() for r in kustomization["resources"]] == [
            deploy.BASE_DIR
        ], f"{overlay}: an overlay adds to the one base, through components"
        for component in kustomization.get("components", []):
            path = (directory / component).resolve()
            assert path.parent == deploy.COMPONENTS_DIR, f"{overlay}: {component}"
            used.add(path.name)
    on_disk = {p.name for p in deploy.COMPONENTS_DIR.iterdir() if p.is_dir()}
    assert used == on_disk, "a component no overlay renders is never validated"


def test_secrets_stay_out_of_the_kustomization(manifests: Any, deploy: Any) -> None:
    """`kubectl apply -k` must never overwrite real Secrets with the template's placeholders."""
    assert manifests.of_kind("Secret") == []
    for secret in deploy.secret_templates():
        assert secret["kind"] == "Secret"
        for key, value in secret["stringData"].items():
            assert "CHANGE_ME" in value, f"{secret['metadata']['name']}.{key} is not a placeholder"


def test_every_namespaced_object_is_in_the_chat_namespace(manifests: Any) -> None:
    for obj in manifests.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "chat", obj["metadata"]["name"]


def _compose_schema() -> dict[str, Any]:
    vendor = files("check_jsonschema.builtin_schemas.vendor")
    assert "Apache License" in vendor.joinpath("licenses/LICENSE.compose-spec").read_text()
    return dict(json.loads(vendor.joinpath("compose-spec.json").read_text()))


def test_compose_file_validates_against_the_compose_specification(compose: Any) -> None:
    schema = _compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert errors == []


def test_compose_validation_catches_a_misspelt_key(compose: Any) -> None:
    schema = _compose_schema()
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["depends_onn"] = broken["services"]["gateway"].pop("depends_on")
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))
