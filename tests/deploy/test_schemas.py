"""The deployment files are valid for the tools that read them: every Kubernetes object against
the API's JSON schemas (kubernetes-validate, strict: an unknown field is an error) and
docker-compose.yml against the Compose Specification's schema (the copy vendored, with its
Apache-2.0 licence, in check-jsonschema). Both schemas ship inside the packages: no network."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

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


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_validates(manifests: Any, version: str) -> None:
    assert len(manifests.objects) > 20
    assert _errors(manifests.objects, version) == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_ws_direct_variant_validates(manifests_ws_direct: Any, version: str) -> None:
    assert _errors(manifests_ws_direct.objects, version) == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_secret_templates_validate(deploy: Any, version: str) -> None:
    assert _errors(deploy.secret_templates(), version) == []


def test_strict_validation_catches_a_misspelt_field(manifests: Any) -> None:
    """The validator is not a rubber stamp."""
    deployment = json.loads(json.dumps(manifests.of_kind("Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    assert _errors([deployment], K8S_VERSIONS[-1])


def test_every_manifest_file_is_in_the_kustomization(deploy: Any) -> None:
    kustomization = yaml.safe_load((deploy.K8S_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {
        p.name
        for p in deploy.K8S_DIR.glob("*.yaml")
        if p.name not in ("kustomization.yaml", deploy.SECRETS_TEMPLATE.name)
    }
    assert listed == on_disk


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
