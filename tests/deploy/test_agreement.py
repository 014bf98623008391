"""The Dockerfile, docker-compose.yml, the image table of `make images` (scripts/images.py) and
the Kubernetes manifests agree with each other and with the code: image names, the package and
module of each image, ports, and the health and readiness paths.

The port of a service is its settings' default PORT (FLAIRBIT_PORT for the stand-in); the
image EXPOSEs it and sets it, compose exposes or publishes it, the Deployment's containerPort,
its PORT variable, its Service, its probes and its NetworkPolicy use it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


def _port_variable(deployable: Any) -> str:
    return "FLAIRBIT_PORT" if deployable.name == "flairbit-stub" else "PORT"


def _port(deployable: Any, dockerfiles: Any, deploy: Any) -> int:
    """The settings' default port; the image's EXPOSE while the settings do not exist yet."""
    spec = deploy.env_spec(deployable.name)
    if spec is not None:
        return int(spec.defaults[_port_variable(deployable)])
    (exposed,) = dockerfiles[deployable.name].exposed()
    return int(exposed)


def _repository(image: str) -> str:
    name, _, tag = image.rpartition(":")
    return name if name and "/" not in tag else image


# ---- image names ----------------------------------------------------------------------------


def test_image_names_agree(deployable: Any, dockerfiles: Any, compose: Any, manifests: Any) -> None:
    dockerfile = dockerfiles[deployable.name]
    assert dockerfile.labels()["org.opencontainers.image.title"] == deployable.image
    for service in deployable.compose:
        ours = compose["services"][service]
        assert _repository(ours["image"]) == deployable.image, service
        assert ours["build"]["context"] == "."
        assert Path(ours["build"]["dockerfile"]) == Path("Dockerfile")
        assert ours["build"]["target"] == deployable.target, service
        assert ours["build"]["args"]["PACKAGE"] == deployable.package, service
    if deployable.k8s:
        assert _repository(manifests.container(deployable)["image"]) == deployable.image


def test_make_images_builds_every_image(deploy: Any) -> None:
    """scripts/images.py (make images, make compose-test) builds what the tests know about."""
    from chat_testing import containers

    table = {(i.target, i.package, i.repository) for i in containers.IMAGES}
    assert table == {(d.target, d.package, d.image) for d in deploy.DEPLOYABLES}


def test_the_local_servers_override_swaps_every_server(compose: Any) -> None:
    from chat_testing import containers

    override = yaml.safe_load(containers.LOCAL_SERVERS_OVERRIDE.read_text())
    assert override["services"] == {s.service: {"image": s.local} for s in containers.SERVERS}
    for server in containers.SERVERS:
        assert compose["services"][server.service]["image"] == server.registry
        assert (containers.LOCAL_DIR / server.dockerfile).exists()


def test_compose_builds_only_our_images_and_names_them(compose: Any, deploy: Any) -> None:
    ours = {s for d in deploy.DEPLOYABLES for s in d.compose}
    for name, service in compose["services"].items():
        if "build" in service:
            assert name in ours, f"compose builds {name}, which no test knows about"


def test_each_overlay_sets_one_tag_for_every_image(manifests: Any, deploy: Any) -> None:
    """A release is built and deployed as a whole: an overlay names every image once, with
    the same tag (the version label repeats it; see test_k8s_conventions.py)."""
    images = deploy.kustomization(deploy.variant_dir(manifests.variant))["images"]
    listed = {entry["name"] for entry in images}
    used = {
        _repository(c["image"])
        for kind in ("Deployment", "Job")
        for w in manifests.of_kind(kind)
        for c in w["spec"]["template"]["spec"]["containers"]
    }
    expected = {d.image for d in deploy.DEPLOYABLES if d.k8s}
    assert listed == used == expected
    assert len({str(entry["newTag"]) for entry in images}) == 1, images


# ---- what each image runs ---------------------------------------------------------------


def test_the_image_runs_its_package(
    deployable: Any, dockerfiles: Any, compose: Any, manifests: Any
) -> None:
    dockerfile = dockerfiles[deployable.name]
    assert dockerfile.cmd() == ["python", "-m", deployable.module]
    syncs = [v for v in dockerfile.build.values("RUN") if "uv sync" in v]
    assert '--package "$PACKAGE"' in syncs[-1]  # PACKAGE: see test_image_names_agree
    if deployable.k8s:
        container = manifests.container(deployable)
        for key in ("command", "args"):
            assert key not in container, "the manifest runs the image's CMD; change the Dockerfile"
    for service in deployable.compose:
        command = compose["services"][service].get("command")
        if command is not None:
            assert command[0] == "python", f"compose {service} runs {command}"


# ---- ports ----------------------------------------------------------------------------------


def test_ports_agree(
    server: Any, dockerfiles: Any, compose: Any, manifests: Any, deploy: Any
) -> None:
    port = _port(server, dockerfiles, deploy)
    dockerfile = dockerfiles[server.name]
    assert dockerfile.exposed() == {port}
    assert int(dockerfile.env()[_port_variable(server)]) == port
    for service in server.compose:
        ours = compose["services"][service]
        env = deploy.compose_env(ours)
        if "command" in ours:  # a one-shot on the same image (keys) serves nothing
            continue
        if _port_variable(server) in env:
            assert int(env[_port_variable(server)]) == port
        published = {int(str(p).rsplit(":", 1)[-1]) for p in ours.get("ports", [])}
        assert {int(p) for p in ours.get("expose", [])} | published == {port}, service
    if not server.k8s:
        return
    container = manifests.container(server)
    (declared,) = container["ports"]
    assert declared["containerPort"] == port
    assert manifests.env_value(manifests.container_env(server)["PORT"]) == str(port)
    service = manifests.get("Service", server.name)
    (exposed,) = service["spec"]["ports"]
    assert exposed["port"] == port
    assert exposed["targetPort"] in (port, declared["name"])
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": server.name}
    annotations = manifests.workload(server)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


# ---- health and readiness -------------------------------------------------------------------


def _serves(module_dir: Path, path: str) -> bool:
    sources = "\n".join(p.read_text() for p in module_dir.rglob("*.py"))
    return path in sources or "operational_routes(" in sources


def test_probe_paths_agree(server: Any, dockerfiles: Any, manifests: Any, deploy: Any) -> None:
    module_dir = deploy.ROOT / server.directory / "src" / server.module
    for path in ('"/healthz"', '"/readyz"'):
        assert _serves(module_dir, path), f"{server.module} does not serve {path}"
    healthcheck = dockerfiles[server.name].healthcheck()
    assert healthcheck is not None
    assert "/healthz" in healthcheck
    assert _port_variable(server) in healthcheck, "the HEALTHCHECK must follow the port setting"
    if not server.k8s:
        return
    container = manifests.container(server)
    port_name = container["ports"][0]["name"]
    probes = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in probes.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in (port_name, container["ports"][0]["containerPort"]), probe


def test_ingress_backends_exist(manifests: Any, deploy: Any) -> None:
    tls_secrets = {s["metadata"]["name"] for s in deploy.secret_templates()}
    services = {s["metadata"]["name"]: s for s in manifests.of_kind("Service")}
    for ingress in manifests.of_kind("Ingress"):
        for tls in ingress["spec"].get("tls", []):
            assert tls["secretName"] in tls_secrets
            assert set(tls["hosts"]) == {rule["host"] for rule in ingress["spec"]["rules"]}
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services, path["path"]
                ports = {p["port"] for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["number"] in ports, path["path"]


def test_the_readme_of_deploy_names_every_file(deploy: Any) -> None:
    readme = (deploy.K8S_DIR / "README.md").read_text()
    paths = [*deploy.K8S_DIR.rglob("*.yaml"), *deploy.K8S_DIR.rglob("*.env")]
    for path in sorted(paths):
        name = str(path.relative_to(deploy.K8S_DIR))
        assert re.search(re.escape(name), readme), f"deploy/k8s/README.md does not mention {name}"
