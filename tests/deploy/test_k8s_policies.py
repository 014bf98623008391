"""What the Kubernetes manifests promise beyond schema validity, in every overlay: hardened
pods, a drain matched to each service's shutdown, autoscaling and disruption budgets, the
network reachability the design asks for (evaluated from the NetworkPolicies), and the Ingress
routes and timeouts (which depend on whether the overlay turns the ws-direct component on)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import pytest

from chat_common.serve import serve

# Seconds between the end of the drain and SIGKILL, at least.
MARGIN_SECONDS = 5


def _pod(manifests: Any, deployable: Any) -> dict[str, Any]:
    return dict(manifests.workload(deployable)["spec"]["template"]["spec"])


def test_pods_are_hardened(k8s_deployable: Any, manifests: Any) -> None:
    pod = _pod(manifests, k8s_deployable)
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] != 0
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False, "Service links would add unread variables"
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "/tmp is the one writable place"
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}, kind


def test_the_namespace_enforces_the_restricted_pod_security_standard(manifests: Any) -> None:
    labels = manifests.get("Namespace", "chat")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# ---- drain ----------------------------------------------------------------------------------


def _drain_seconds(deployable: Any, manifests: Any, deploy: Any) -> float:
    """How long the process may take after SIGTERM: its SHUTDOWN_GRACE_SECONDS where it has
    one (from the manifest, else the settings' default), else uvicorn's graceful timeout as
    chat_common.serve sets it."""
    spec = deploy.env_spec(deployable.name)
    env = manifests.container_env(deployable)
    if "SHUTDOWN_GRACE_SECONDS" in env:
        return float(manifests.env_value(env["SHUTDOWN_GRACE_SECONDS"]))
    if spec is not None and "SHUTDOWN_GRACE_SECONDS" in spec.defaults:
        return float(spec.defaults["SHUTDOWN_GRACE_SECONDS"])
    return float(inspect.signature(serve).parameters["graceful_seconds"].default)


def _pre_stop_seconds(container: dict[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", command
    (seconds,) = command[1:]
    return float(seconds)


def _deployments(deploy: Any) -> list[Any]:
    return [d for d in deploy.DEPLOYABLES if d.k8s == "Deployment"]


def test_termination_grace_covers_pre_stop_and_drain(manifests: Any, deploy: Any) -> None:
    grace = {}
    for deployable in _deployments(deploy):
        pod = _pod(manifests, deployable)
        (container,) = pod["containers"]
        pre_stop = _pre_stop_seconds(container)
        drain = _drain_seconds(deployable, manifests, deploy)
        grace[deployable.name] = pod["terminationGracePeriodSeconds"]
        assert grace[deployable.name] >= pre_stop + drain + MARGIN_SECONDS, (
            f"{deployable.name}: preStop {pre_stop} s + drain {drain} s + {MARGIN_SECONDS} s "
            f"> terminationGracePeriodSeconds {grace[deployable.name]}"
        )
        routed = deployable.name != "outbox-relay"  # the relay takes no routed traffic
        if routed:
            assert pre_stop >= 5, f"{deployable.name}: leave the endpoints before SIGTERM"
    longest = max(grace.values())
    assert grace["ws-edge"] == longest, "ws-edge drains longest (clients reconnect elsewhere)"
    assert list(grace.values()).count(longest) == 1


def test_autoscaling_and_disruption_budgets(manifests: Any, deploy: Any) -> None:
    for deployable in _deployments(deploy):
        deployment = manifests.workload(deployable)
        name = deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"], f"{name}: the HPA owns the replica count"
        hpa = manifests.get("HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
        assert 1 <= low <= high, name
        if manifests.variant not in deploy.SINGLE_POD_OVERLAYS:
            assert low >= 2, f"{name}: one pod lost (node, zone, eviction) is the service lost"
        pdb = manifests.get("PodDisruptionBudget", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable")
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()


def test_ws_edge_scales_down_gently(manifests: Any) -> None:
    behavior = manifests.get("HorizontalPodAutoscaler", "ws-edge")["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]


# ---- network policies -----------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A pod in the chat namespace (labels), a pod of another namespace, or an address
    outside the cluster (namespace None, no labels)."""

    namespace: str | None
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def chat(cls, name: str) -> Peer:
        return cls(
            "chat", (("app.kubernetes.io/name", name), ("app.kubernetes.io/part-of", "chat"))
        )

    @classmethod
    def pod_in(cls, namespace: str, **labels: str) -> Peer:
        return cls(namespace, tuple(labels.items()))


EXTERNAL = Peer(None)
INGRESS_CONTROLLER = Peer.pod_in("ingress-nginx", **{"app.kubernetes.io/name": "ingress-nginx"})
DNS = Peer.pod_in("kube-system", **{"k8s-app": "kube-dns"})
PROMETHEUS = Peer.pod_in("monitoring", **{"app.kubernetes.io/name": "prometheus"})
OTHER_NAMESPACE = Peer.pod_in("default", **{"app": "curl"})


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    assert set(selector) <= {"matchLabels"}, "this evaluator reads matchLabels only"
    match_labels: dict[str, str] = selector.get("matchLabels", {})
    return match_labels.items() <= labels.items()


def _peer_matches(rule_peer: dict[str, Any], peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        return peer.namespace is None
    if peer.namespace is None:
        return False
    if "namespaceSelector" in rule_peer:
        namespace_labels = {"kubernetes.io/metadata.name": peer.namespace}
        if not _selects(rule_peer["namespaceSelector"], namespace_labels):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return _selects(rule_peer.get("podSelector"), dict(peer.labels))


def _port_matches(rule: dict[str, Any], port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for p in ports:
        low = p.get("port")
        if p.get("protocol", "TCP") == protocol and (
            low is None or low <= port <= p.get("endPort", low)
        ):
            return True
    return False


def _allowed(
    policies: list[dict[str, Any]], source: Peer, target: Peer, port: int, protocol: str = "TCP"
) -> bool:
    """Kubernetes semantics: a direction is open unless a policy selects the pod for it; then
    some rule of some selecting policy must admit the peer and port."""

    def direction(pod: Peer, other: Peer, kind: str, key: str, peers: str) -> bool:
        if pod.namespace != "chat":
            return True  # only this namespace's policies are ours to judge
        selecting = [
            p
            for p in policies
            if _selects(p["spec"]["podSelector"], dict(pod.labels))
            and kind in p["spec"].get("policyTypes", ["Ingress"])
        ]
        if not selecting:
            return True
        return any(
            _port_matches(rule, port, protocol)
            and (
                peers not in rule
                or any(_peer_matches(r, other, p["metadata"]["namespace"]) for r in rule[peers])
            )
            for p in selecting
            for rule in p["spec"].get(key) or []
        )

    return direction(source, target, "Egress", "egress", "to") and direction(
        target, source, "Ingress", "ingress", "from"
    )


GATEWAY, SESSION, MESSAGE, EDGE, RELAY, MIGRATIONS = (
    Peer.chat(n)
    for n in ("gateway", "session-svc", "message-svc", "ws-edge", "outbox-relay", "migrations")
)
OURS = {"gateway": GATEWAY, "session-svc": SESSION, "message-svc": MESSAGE, "ws-edge": EDGE}
PORTS = {"gateway": 8080, "session-svc": 8081, "message-svc": 8082, "ws-edge": 8083}
ALL = (GATEWAY, SESSION, MESSAGE, EDGE, RELAY, MIGRATIONS)
POSTGRES, RABBITMQ, REDIS, HTTPS = 5432, 5672, 6379, 443

REACHABLE = {
    # who may open a connection to whom (in-namespace services by name, external by port)
    ("ingress", "gateway"),
    ("gateway", "session-svc"),
    ("gateway", "message-svc"),
    ("gateway", "ws-edge"),
    ("ws-edge", "session-svc"),
    ("ws-edge", "message-svc"),
}
EXTERNAL_PORTS = {
    GATEWAY: {REDIS, HTTPS},
    SESSION: {POSTGRES, REDIS, HTTPS},
    MESSAGE: {POSTGRES, RABBITMQ, REDIS, HTTPS},
    EDGE: {RABBITMQ, REDIS, HTTPS},
    RELAY: {POSTGRES, RABBITMQ},
    MIGRATIONS: {POSTGRES},
}
NAMES = {GATEWAY: "gateway", SESSION: "session-svc", MESSAGE: "message-svc", EDGE: "ws-edge"}


@pytest.fixture
def policies(manifests: Any) -> list[dict[str, Any]]:
    return list(manifests.of_kind("NetworkPolicy"))


def test_everything_is_denied_by_default(policies: list[dict[str, Any]]) -> None:
    assert any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    )


def test_only_the_ingress_routes_targets_are_reachable_from_outside(
    policies: list[dict[str, Any]], manifests: Any
) -> None:
    """The gateway; and ws-edge where the overlay routes /ws straight to it (ws-direct)."""
    for name, target in OURS.items():
        expected = ("ingress", name) in REACHABLE or (manifests.ws_direct and name == "ws-edge")
        assert _allowed(policies, INGRESS_CONTROLLER, target, PORTS[name]) is expected, name
        assert not _allowed(policies, OTHER_NAMESPACE, target, PORTS[name]), name
        assert not _allowed(policies, EXTERNAL, target, PORTS[name]), name


def test_services_reach_exactly_the_services_they_call(policies: list[dict[str, Any]]) -> None:
    for source in ALL:
        for target_name, target in OURS.items():
            if source == target:
                continue
            expected = (NAMES.get(source), target_name) in REACHABLE
            assert _allowed(policies, source, target, PORTS[target_name]) is expected, (
                f"{source.labels[0][1]} -> {target_name}: expected {expected}"
            )


@pytest.mark.parametrize("port", [POSTGRES, RABBITMQ, REDIS, HTTPS])
def test_only_those_that_need_them_reach_the_external_servers(
    policies: list[dict[str, Any]], port: int
) -> None:
    for source, allowed_ports in EXTERNAL_PORTS.items():
        assert _allowed(policies, source, EXTERNAL, port) is (port in allowed_ports), (
            f"{source.labels[0][1]} -> port {port}"
        )


def test_every_pod_resolves_names_and_is_scraped(policies: list[dict[str, Any]]) -> None:
    for source in ALL:
        assert _allowed(policies, source, DNS, 53, "UDP")
        assert _allowed(policies, source, DNS, 53, "TCP")
        assert not _allowed(policies, source, EXTERNAL, 25), "no general egress"
    for name, target in {**OURS, "outbox-relay": RELAY}.items():
        assert _allowed(policies, PROMETHEUS, target, PORTS.get(name, 8084)), name


def test_ws_direct_opens_ws_edge_to_the_ingress_controller(
    policies: list[dict[str, Any]], manifests: Any
) -> None:
    assert _allowed(policies, INGRESS_CONTROLLER, EDGE, 8083) is manifests.ws_direct
    assert not _allowed(policies, INGRESS_CONTROLLER, SESSION, 8081)


# ---- Ingress --------------------------------------------------------------------------------


def _routes(manifests: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    routes = {}
    for ingress in manifests.of_kind("Ingress"):
        assert ingress["spec"]["ingressClassName"] == "nginx"
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                routes[path["path"]] = (path["backend"]["service"]["name"], ingress)
    return routes


def test_the_ingress_routes_the_public_paths_to_the_gateway(manifests: Any) -> None:
    routes = _routes(manifests)
    for path in ("/api", "/internal/flairbit", "/openapi.json", "/asyncapi.json", "/docs"):
        assert routes[path][0] == "gateway", path
    assert routes["/ws"][0] == ("ws-edge" if manifests.ws_direct else "gateway")
    assert routes["/ws/"][0] == routes["/ws"][0], "SockJS goes where /ws goes"


def test_websocket_timeouts(manifests: Any) -> None:
    routes = _routes(manifests)
    _, ws_ingress = routes["/ws"]
    annotations = ws_ingress["metadata"]["annotations"]
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{key}"]) >= 3600, key
    _, api_ingress = routes["/api"]
    assert api_ingress is not ws_ingress, "REST keeps short timeouts on its own Ingress"


def test_sockjs_sessions_stay_on_one_edge(manifests: Any) -> None:
    """A SockJS session lives on one edge: straight from the Ingress, nginx keeps a browser on
    its edge by cookie; through the gateway, the gateway picks the edge of each session among
    the edge pods, which a headless Service names."""
    routes = _routes(manifests)
    _, ws_ingress = routes["/ws/"]
    annotations = ws_ingress["metadata"]["annotations"]
    if manifests.ws_direct:
        assert annotations.get("nginx.ingress.kubernetes.io/affinity") == "cookie"
    pods, edge = manifests.get("Service", "ws-edge-pods"), manifests.get("Service", "ws-edge")
    assert pods["spec"]["clusterIP"] == "None"
    assert pods["spec"]["selector"] == edge["spec"]["selector"]
    (gateway,) = manifests.get("Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
    [entry] = [e for e in gateway["env"] if e["name"] == "SOCKJS_EDGES_DNS"]
    dns = manifests.env_value(entry)
    assert dns is not None
    host, _, port = dns.partition(":")
    assert host == "ws-edge-pods"
    assert int(port) == pods["spec"]["ports"][0]["port"]


def test_the_websocket_route_logs_no_request_lines(manifests: Any) -> None:
    """A browser's handshake URL carries its token (?access_token=): the Ingress serving /ws
    must not write it to nginx's access log, and no Ingress route of the API takes it."""
    routes = _routes(manifests)
    _, ws_ingress = routes["/ws"]
    annotations = ws_ingress["metadata"]["annotations"]
    assert annotations.get("nginx.ingress.kubernetes.io/enable-access-log") == "false"
    ws_paths = {p["path"] for r in ws_ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert ws_paths == {"/ws", "/ws/"}  # the WebSocket endpoint and SockJS under it
