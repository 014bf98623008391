"""docker-compose.yml starts in a safe order and runs hardened: each service waits for what its
environment names (healthy servers, finished one-shots), the gateway comes up last, our
containers run read-only as in Kubernetes, and only loopback addresses are published."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

GATED = {"service_healthy", "service_completed_successfully"}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    assert isinstance(depends, dict), "use the long form: depends_on: {name: {condition: ...}}"
    return {name: entry["condition"] for name, entry in depends.items()}


def _transitive(services: dict[str, Any], name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dependency in _depends_on(services[todo.pop()]):
            if dependency not in seen:
                seen.add(dependency)
                todo.append(dependency)
    return seen


def _has_healthcheck(name: str, service: dict[str, Any], dockerfiles: Any, deploy: Any) -> bool:
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable", False)
    for deployable in deploy.DEPLOYABLES:
        if name in deployable.compose:
            found = dockerfiles[deployable.name].healthcheck()
            return found is not None and found.strip() != "NONE"
    return False


def test_every_dependency_is_gated_on_health_or_completion(
    compose: Any, dockerfiles: Any, deploy: Any
) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in _depends_on(service).items():
            assert condition in GATED, f"{name} -> {dependency}: {condition}"
            target = services[dependency]
            if condition == "service_healthy":
                assert _has_healthcheck(dependency, target, dockerfiles, deploy), dependency
            else:
                assert target.get("restart") == "no", f"{dependency} is a one-shot"


def test_each_service_waits_for_what_its_environment_names(compose: Any, deploy: Any) -> None:
    services = compose["services"]
    for name, service in services.items():
        env = deploy.compose_env(service)
        depends = _depends_on(service)
        needs: dict[str, str] = {}
        for key, value in env.items():
            host = urlsplit(value).hostname if "://" in value else None
            if host is None or host not in services or host == name:
                continue
            if key == "DATABASE_URL" and name != "migrations":
                needs["migrations"] = "service_completed_successfully"  # the schema, not only up
            else:
                needs[host] = "service_healthy"
        if any(v.startswith("/var/lib/chat-dev/keys") for v in env.values()):
            needs.setdefault("keys", "service_completed_successfully")
        for dependency, condition in needs.items():
            reached = dependency in _transitive(services, name)
            assert reached, f"{name} does not wait for {dependency}"
            if dependency in depends:
                assert depends[dependency] == condition, f"{name} -> {dependency}"


def test_the_gateway_starts_last(compose: Any, deploy: Any) -> None:
    ours = {s for d in deploy.DEPLOYABLES for s in d.compose} | {"postgres", "rabbitmq", "redis"}
    assert _transitive(compose["services"], "gateway") == ours - {"gateway"}


def test_our_containers_run_hardened(compose: Any, deploy: Any) -> None:
    for deployable in deploy.DEPLOYABLES:
        for name in deployable.compose:
            service = compose["services"][name]
            assert service.get("read_only") is True, name
            assert "/tmp" in service.get("tmpfs", []), name
            assert service.get("cap_drop") == ["ALL"], name
            assert "no-new-privileges:true" in service.get("security_opt", []), name


def test_only_loopback_is_published_and_the_gateway_on_8080(compose: Any) -> None:
    published: dict[str, set[tuple[int, int]]] = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            host_ip, host_port, container_port = str(port).split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this machine"
            published[name] = published.get(name, set()) | {(int(host_port), int(container_port))}
    assert (8080, 8080) in published["gateway"]


def test_one_shots_share_the_key_volume_with_their_readers(compose: Any) -> None:
    services = compose["services"]
    writers = {"keys", "flairbit"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target, *mode = str(volume).split(":")
            if source != "chat-keys":
                continue
            assert target == "/var/lib/chat-dev/keys"
            assert (mode == ["ro"]) is (name not in writers), f"{name} mounts the keys {mode}"
