"""Every environment variable a process reads is set (or safely defaulted) where it runs, in
docker-compose.yml and in the Kubernetes manifests, and nothing is set that it does not read.

What a service reads comes from its settings module, imported (field names upper-cased, as
chat_common.settings.load reads them); the FlairBit stand-in's FLAIRBIT_* fields; the
`os.environ` reads of the migrations and of scripts/stack.py (the compose `keys` one-shot).
A service whose settings module does not exist yet is skipped, with the reason printed.

"Safely defaulted": a default naming 127.0.0.1, localhost or the repository's .run directory
only works on a developer's machine, so the image, compose or the manifest must set it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from typing import Any
from urllib.parse import urlsplit

import pytest


def _process(deployable: Any, service: str) -> str:
    return "keys" if service == "keys" else deployable.name


def _set_anywhere(spec: Any, image_env: dict[str, str], env: set[str]) -> set[str]:
    return {n for n in (set(image_env) | env) if spec.reads(n)}


def _check_set(spec: Any, image_env: dict[str, str], env: set[str], where: str) -> None:
    given = set(image_env) | env
    missing = sorted((spec.required | spec.must_set) - given)
    assert not missing, (
        f"{where}: {missing} must be set ({spec.source} has no default, or one that only works "
        "on a developer's machine)"
    )
    if spec.checks_user_tokens:
        assert {"JWT_JWKS_URL", "JWT_PUBLIC_KEY_FILE"} & given, (
            f"{where}: set JWT_JWKS_URL (or JWT_PUBLIC_KEY_FILE): user tokens cannot be checked"
        )


def _check_read(spec: Any, env: set[str], where: str) -> None:
    unread = sorted(n for n in env if not spec.reads(n))
    assert not unread, f"{where} sets {unread}, which {spec.source} does not read"


def test_the_services_that_check_user_tokens_are_recognised(deploy: Any) -> None:
    """DESIGN.md: the gateway, session-svc, message-svc and ws-edge verify user JWTs. If the
    way they build their verifier changes, the JWT_* checks below must still apply to them."""
    for name in ("gateway", "session-svc", "message-svc", "ws-edge"):
        spec = deploy.env_spec(name)
        if spec is not None:
            assert spec.checks_user_tokens, f"{name}: update TOKEN_CHECK_MARKERS in conftest.py"


# ---- docker-compose.yml -----------------------------------------------------------------


def test_compose_sets_what_each_process_reads(
    compose_process: tuple[Any, str], compose: Any, dockerfiles: Any, deploy: Any
) -> None:
    deployable, service = compose_process
    spec = deploy.env_spec_or_skip(_process(deployable, service))
    env = set(deploy.compose_env(compose["services"][service]))
    image_env = dockerfiles[deployable.name].env()
    _check_set(spec, image_env, env, f"compose service {service}")


def test_compose_sets_nothing_unread(
    compose_process: tuple[Any, str], compose: Any, deploy: Any
) -> None:
    deployable, service = compose_process
    spec = deploy.env_spec_or_skip(_process(deployable, service))
    _check_read(spec, set(deploy.compose_env(compose["services"][service])), f"compose {service}")


def _stack_services() -> list[Any]:
    path = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "stack.py")
    module_spec = importlib.util.spec_from_file_location("chat_stack_for_deploy_tests", path)
    assert module_spec is not None
    assert module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # its dataclasses look their module up
    module_spec.loader.exec_module(module)
    return list(module.services())


def _portable(value: str) -> bool:
    """A stack.py value that means the same in a container: not a path on this machine, not
    the address of another process of the stack (the published gateway's origin is kept)."""
    return not value.startswith("/") and not re.search(r"127\.0\.0\.1:(?!8080\b)\d+", value)


def test_compose_gives_each_service_what_make_dev_gives_it(compose: Any, deploy: Any) -> None:
    """`docker compose up` is the same stack as `make dev` (scripts/stack.py): every variable
    stack.py sets (that the service reads) is set in compose too, to the same value unless it
    names a host or a path."""
    same_base = os.environ.get("CHAT_PORT_BASE", "8080") == "8080"
    for stack_service in _stack_services():
        ours = compose["services"].get(stack_service.name)
        assert ours is not None, f"compose has no service {stack_service.name}"
        env = deploy.compose_env(ours)
        # Only what the service reads: stack.py hands some variables to every process.
        spec = deploy.env_spec(stack_service.name)
        given = {k: v for k, v in stack_service.env.items() if spec is None or spec.reads(k)}
        missing = sorted(set(given) - set(env))
        assert not missing, f"compose {stack_service.name} lacks {missing} (stack.py sets them)"
        for key, value in given.items():
            # LOG_LEVEL: both pass the caller's own on (stack.py from its environment).
            if key != "LOG_LEVEL" and same_base and _portable(value):
                assert env[key] == value, f"compose {stack_service.name}: {key}"


# ---- Kubernetes ---------------------------------------------------------------------------


def test_manifests_set_what_each_service_reads(
    k8s_deployable: Any, manifests: Any, dockerfiles: Any, deploy: Any
) -> None:
    spec = deploy.env_spec_or_skip(k8s_deployable.name)
    env = set(manifests.container_env(k8s_deployable))
    image_env = dockerfiles[k8s_deployable.name].env()
    _check_set(spec, image_env, env, f"the {k8s_deployable.name} manifest")


def test_manifests_set_nothing_unread(k8s_deployable: Any, manifests: Any, deploy: Any) -> None:
    spec = deploy.env_spec_or_skip(k8s_deployable.name)
    env = set(manifests.container_env(k8s_deployable))
    _check_read(spec, env, f"the {k8s_deployable.name} manifest")


def test_every_configmap_and_secret_key_is_used(manifests: Any, deploy: Any) -> None:
    used_config: set[tuple[str, str]] = set()
    used_secret: set[tuple[str, str]] = set()
    mounted: set[str] = set()
    for kind in ("Deployment", "Job"):
        for workload in manifests.of_kind(kind):
            pod = workload["spec"]["template"]["spec"]
            for volume in pod.get("volumes", []):
                if "secret" in volume:
                    mounted.add(volume["secret"]["secretName"])
            for container in pod["containers"]:
                for entry in container.get("env", []):
                    ref = entry.get("valueFrom", {})
                    if "configMapKeyRef" in ref:
                        used_config.add(
                            (ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"])
                        )
                    if "secretKeyRef" in ref:
                        used_secret.add((ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]))
    for config_map in manifests.of_kind("ConfigMap"):
        name = config_map["metadata"]["name"]
        defined = {(name, key) for key in config_map["data"]}
        assert defined - used_config == set(), (
            f"ConfigMap keys nobody reads: {defined - used_config}"
        )
    assert used_config <= {
        (c["metadata"]["name"], k) for c in manifests.of_kind("ConfigMap") for k in c["data"]
    }, "a Deployment refers to a ConfigMap key that does not exist"
    templates = {s["metadata"]["name"]: s for s in deploy.secret_templates()}
    defined_secret = {
        (name, key)
        for name, s in templates.items()
        if s["type"] == "Opaque" and name not in mounted
        for key in s["stringData"]
    }
    assert used_secret <= {(n, k) for n, s in templates.items() for k in s["stringData"]}, (
        "a workload refers to a Secret key missing from secrets.template.yaml"
    )
    assert defined_secret - used_secret == set(), "Secret keys nobody reads"
    assert mounted <= set(templates), "a mounted Secret is missing from secrets.template.yaml"


# ---- URLs between services ------------------------------------------------------------------


def _service_urls(env: dict[str, str]) -> dict[str, tuple[str, int | None]]:
    found = {}
    for key, value in env.items():
        if key.endswith("_URL") and "://" in value:
            parts = urlsplit(value)
            if parts.hostname:
                found[key] = (parts.hostname, parts.port)
    return found


def test_compose_urls_name_services_and_their_ports(compose: Any, deploy: Any) -> None:
    services = compose["services"]

    def port_of(name: str) -> set[int]:
        service = services[name]
        ports = {int(p) for p in service.get("expose", [])}
        ports |= {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}
        return ports

    for name, service in services.items():
        for key, (host, port) in _service_urls(deploy.compose_env(service)).items():
            if host in services and port is not None:
                assert port in port_of(host), f"compose {name}: {key} names {host}:{port}"


def test_manifest_urls_name_services_and_their_ports(manifests: Any) -> None:
    services = {s["metadata"]["name"]: s for s in manifests.of_kind("Service")}
    data = manifests.config_map("chat-config")["data"]
    for key, (host, port) in _service_urls(data).items():
        if "." in host:  # external (FlairBit): configured, not ours to check
            continue
        assert host in services, f"{key} names {host}, which is no Service here"
        assert port in {p["port"] for p in services[host]["spec"]["ports"]}, key


@pytest.mark.parametrize("key", ["DATABASE_URL", "AMQP_URL", "REDIS_URL"])
def test_the_external_servers_are_configured_not_bundled(
    manifests: Any, deploy: Any, key: str
) -> None:
    """PostgreSQL, RabbitMQ and Redis come from Secrets (DSNs); no workload runs them here."""
    keys = deploy.secret_template("chat-secrets")["stringData"]
    assert any(k == key or k.startswith(f"{key}_") for k in keys)  # AMQP_URL_{SERVICE}
    images = [
        c["image"]
        for kind in ("Deployment", "StatefulSet", "DaemonSet")
        for w in manifests.of_kind(kind)
        for c in w["spec"]["template"]["spec"]["containers"]
    ]
    assert all(i.startswith("chat/") for i in images), images


def test_development_only_settings_stay_out_of_the_manifests(manifests: Any, deploy: Any) -> None:
    """DEV_TOKEN_URL opens the stand-in's token minting through the gateway: never deployed."""
    for deployable in deploy.DEPLOYABLES:
        if deployable.k8s:
            assert "DEV_TOKEN_URL" not in manifests.container_env(deployable), deployable.name
