"""The deployment files are valid for the tools that read them: every Kubernetes object the base
and each overlay render against the API's JSON schemas (kubernetes-validate, strict: an unknown
field is an error) and docker-compose.yml against the Compose Specification's schema (the copy
vendored, with its Apache-2.0 licence, in check-jsonschema). Both schemas ship inside the
packages: no network. The layout is checked too: one base, overlays over it, components that
overlays switch on, no file left out of its kustomization."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from .conftest import OVERLAYS

# The oldest Kubernetes these manifests are meant for, and the newest schemas shipped.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())


def _errors(objects: list[dict[str, Any]], version: str) -> list[str]:
    errors = []
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
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
