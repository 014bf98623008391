"""The Kubernetes conventions every overlay keeps: the recommended labels on every object and pod
(applied with kustomize `labels:`, never in a selector), one component per workload, a version
label that is the image tag, one instance per overlay, the shared settings generated into a
ConfigMap whose name follows its content (so a change rolls the pods that read it), Ingress
hosts allowed as origins, and resource requests within their limits."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from .conftest import OVERLAYS

NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
VERSION = "app.kubernetes.io/version"
COMPONENT = "app.kubernetes.io/component"
PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY = "app.kubernetes.io/managed-by"
RECOMMENDED = (NAME, INSTANCE, VERSION, COMPONENT, PART_OF, MANAGED_BY)
# Labels no selector may use: they change with a release or a deployment tool, or differ per
# overlay. (A Deployment's selector is immutable; a Service selecting on the version would lose
# the old pods' endpoints mid-rollout.)
NOT_IN_SELECTORS = {VERSION, INSTANCE, MANAGED_BY}
# The objects of the whole application rather than of one workload.
SHARED_NAME = "chat"


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj["metadata"].get("labels") or {})


def _pod_templates(manifests: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (workload, workload["spec"]["template"])
        for kind in ("Deployment", "Job")
        for workload in manifests.of_kind(kind)
    ]


def _tag(image: str) -> str:
    name, _, tag = image.rpartition(":")
    assert "@" not in image, f"{image}: pinned by digest, the version label needs a tag"
    assert name, f"{image}: no tag"
    assert "/" not in tag, f"{image}: no tag"
    return tag


def test_every_object_carries_the_recommended_labels(manifests: Any) -> None:
    for obj in manifests.objects:
        labels = _labels(obj)
        where = f"{manifests.variant}: {obj['kind']}/{obj['metadata']['name']}"
        missing = [key for key in RECOMMENDED if not labels.get(key)]
        assert not missing, f"{where} lacks {missing}"
        assert labels[PART_OF] == "chat", where
        assert labels[MANAGED_BY] == "kustomize", where


def test_pods_carry_the_labels_of_their_workload(manifests: Any) -> None:
    for workload, template in _pod_templates(manifests):
        pod = template["metadata"]["labels"]
        expected = {key: _labels(workload)[key] for key in RECOMMENDED}
        assert expected.items() <= pod.items(), workload["metadata"]["name"]


def test_each_workload_is_its_own_component(manifests: Any, deploy: Any) -> None:
    """Every object of one workload (its Deployment, Service, budget, autoscaler, policies)
    names the workload and one component; no two workloads share a component; objects of
    the whole application are named after it."""
    ours = {d.name for d in deploy.DEPLOYABLES if d.k8s}
    components: dict[str, set[str]] = {}
    for obj in manifests.objects:
        labels = _labels(obj)
        assert labels[NAME] in ours | {SHARED_NAME}, f"{obj['kind']}/{obj['metadata']['name']}"
        if labels[NAME] in ours:
            components.setdefault(labels[NAME], set()).add(labels[COMPONENT])
    assert set(components) == ours
    for name, values in components.items():
        assert len(values) == 1, f"{name} has components {values}"
    assert len({next(iter(v)) for v in components.values()}) == len(components)
    for deployable in deploy.DEPLOYABLES:
        if deployable.k8s:
            assert _labels(manifests.workload(deployable))[NAME] == deployable.name


def test_the_version_label_is_the_image_tag(manifests: Any) -> None:
    tags = {
        _tag(container["image"])
        for _, template in _pod_templates(manifests)
        for container in template["spec"]["containers"]
    }
    assert len(tags) == 1, f"{manifests.variant}: one release, one tag: {tags}"
    versions = {_labels(obj)[VERSION] for obj in manifests.objects}
    assert versions == tags, f"{manifests.variant}: set the version label to the image tag"


def test_each_overlay_is_its_own_instance(deploy: Any) -> None:
    instances = {}
    for overlay in deploy.OVERLAYS:
        values = {_labels(obj)[INSTANCE] for obj in deploy.render(overlay).objects}
        assert len(values) == 1, f"{overlay}: {values}"
        instances[overlay] = values.pop()
    assert len(set(instances.values())) == len(instances), instances


def _selectors(obj: dict[str, Any]) -> list[dict[str, str]]:
    """Every label selector of an object (matchLabels, or a Service's plain map)."""
    spec = obj.get("spec") or {}
    kind = obj["kind"]
    found: list[dict[str, Any]] = []
    if kind == "Service":
        found.append(spec.get("selector") or {})
    elif kind in ("Deployment", "PodDisruptionBudget"):
        found.append(spec["selector"])
    elif kind == "NetworkPolicy":
        found.append(spec["podSelector"])
        for rule in spec.get("ingress") or []:
            found += [p["podSelector"] for p in rule.get("from", []) if "podSelector" in p]
        for rule in spec.get("egress") or []:
            found += [p["podSelector"] for p in rule.get("to", []) if "podSelector" in p]
    if kind == "Deployment":
        pod = spec["template"]["spec"]
        found += [c["labelSelector"] for c in pod.get("topologySpreadConstraints", [])]
    return [s.get("matchLabels", s) if kind != "Service" else s for s in found]


def test_no_selector_uses_a_changing_label(manifests: Any, deploy: Any) -> None:
    """kustomize's `labels:` keep out of selectors (includeSelectors: false), and the
    deprecated commonLabels, which cannot, is not used."""
    for obj in manifests.objects:
        for selector in _selectors(obj):
            wrong = set(selector) & NOT_IN_SELECTORS
            assert not wrong, f"{obj['kind']}/{obj['metadata']['name']} selects on {wrong}"
    directories = [
        deploy.BASE_DIR,
        *(deploy.variant_dir(o) for o in deploy.OVERLAYS),
        *(p for p in deploy.COMPONENTS_DIR.iterdir() if p.is_dir()),
    ]
    for directory in directories:
        kustomization = deploy.kustomization(directory)
        assert "commonLabels" not in kustomization, directory
        for entry in kustomization.get("labels", []):
            assert entry.get("includeSelectors") is False, directory
            assert entry.get("includeTemplates") is True, directory


# ---- the generated ConfigMap ------------------------------------------------------------------


def _config_readers(manifests: Any, config_map: str) -> dict[str, dict[str, Any]]:
    """Workload name -> its pod template, for the workloads that read ``config_map``."""
    readers = {}
    for workload, template in _pod_templates(manifests):
        for container in template["spec"]["containers"]:
            refs = [
                e["valueFrom"]["configMapKeyRef"]["name"]
                for e in container.get("env", [])
                if "configMapKeyRef" in e.get("valueFrom", {})
            ]
            refs += [s["configMapRef"]["name"] for s in container.get("envFrom", [])]
            if config_map in refs:
                readers[workload["metadata"]["name"]] = template
    return readers


def test_the_shared_settings_are_a_generated_config_map(manifests: Any) -> None:
    config_map = manifests.config_map("chat-config")
    name = config_map["metadata"]["name"]
    assert name != "chat-config", "generated: its name carries a hash of its content"
    assert {"gateway", "session-svc", "message-svc", "ws-edge", "outbox-relay"} <= set(
        _config_readers(manifests, name)
    )
    assert manifests.of_kind("ConfigMap") == [config_map]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_config_change_rolls_the_pods_that_read_it(
    deploy: Any, overlay: str, tmp_path: Path
) -> None:
    before = deploy.render(overlay)
    copy = tmp_path / "k8s"
    shutil.copytree(deploy.K8S_DIR, copy)
    config = copy / "base" / "config.env"
    text = config.read_text()
    assert "\nJWT_ISSUER=flairbit\n" in text
    config.write_text(text.replace("\nJWT_ISSUER=flairbit\n", "\nJWT_ISSUER=flairbit-2\n"))
    after = deploy.Manifests(deploy.kustomize(copy / "overlays" / overlay), overlay)

    old = before.config_map("chat-config")["metadata"]["name"]
    new = after.config_map("chat-config")["metadata"]["name"]
    assert old != new
    readers_before = _config_readers(before, old)
    readers_after = _config_readers(after, new)
    assert set(readers_before) == set(readers_after) != set()
    for name, template in readers_after.items():
        assert template != readers_before[name], f"{name} would not roll"
    for workload, template in _pod_templates(after):
        if workload["metadata"]["name"] not in readers_after:
            (unchanged,) = [
                t for w, t in _pod_templates(before) if w["metadata"] == workload["metadata"]
            ]
            assert template == unchanged, f"{workload['metadata']['name']} rolls for nothing"


def test_every_ingress_host_is_an_allowed_origin(manifests: Any) -> None:
    """Browsers on the public host must pass the gateway's and ws-edge's Origin checks."""
    data = manifests.config_map("chat-config")["data"]
    origins = {o.strip() for o in data["ALLOWED_ORIGINS"].split(",")}
    for ingress in manifests.of_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            assert f"https://{rule['host']}" in origins, (manifests.variant, rule["host"])


# ---- resources --------------------------------------------------------------------------------

_QUANTITY = re.compile(r"^([0-9.]+)(m|Ki|Mi|Gi|Ti)?$")
_FACTOR = {None: 1.0, "m": 1e-3, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}


def _quantity(value: str | int | float) -> float:
    match = _QUANTITY.match(str(value))
    assert match, f"unexpected quantity {value!r}"
    return float(match.group(1)) * _FACTOR[match.group(2)]


def test_requests_fit_within_limits(manifests: Any) -> None:
    for workload, template in _pod_templates(manifests):
        for container in template["spec"]["containers"]:
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request = _quantity(resources["requests"][resource])
                limit = _quantity(resources["limits"][resource])
                assert 0 < request <= limit, (
                    f"{manifests.variant}: {workload['metadata']['name']} {resource}"
                )
