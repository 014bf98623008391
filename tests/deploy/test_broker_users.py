"""Every deployment gives each service that uses RabbitMQ its own user with exactly the grant of
``chat_common.broker_access`` (the integration test there shows what each grant allows and
refuses on the real broker): docker-compose.yml through the definitions its broker loads at
boot, Kubernetes through one Secret key per service and the permissions its template lists."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from chat_common import broker_access

from .conftest import ROOT

DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
BROKER_USERS = set(broker_access.GRANTS)


def test_compose_gives_each_service_its_own_user_with_its_grant(compose: Any, deploy: Any) -> None:
    definitions = json.loads(DEFINITIONS.read_text())
    users = {user["name"]: user for user in definitions["users"]}
    grants = {p["user"]: p for p in definitions["permissions"] if p["vhost"] == "/"}
    seen = set()
    for name, service in compose["services"].items():
        url = deploy.compose_env(service).get("AMQP_URL")
        if url is None:
            continue
        parts = urlsplit(url)
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        assert user == name, f"{name} connects to RabbitMQ as {user!r}"
        assert broker_access.password_matches(password, users[user]["password_hash"]), name
        grant = broker_access.GRANTS[name]
        assert (grants[user]["configure"], grants[user]["write"], grants[user]["read"]) == (
            grant.configure,
            grant.write,
            grant.read,
        ), f"{name}'s permissions in {DEFINITIONS.name} differ from chat_common.broker_access"
        assert users[user]["tags"] == [], f"{name} must not be a tagged (management) user"
        seen.add(name)
    assert seen == BROKER_USERS


def test_the_compose_broker_loads_the_definitions_at_boot(compose: Any) -> None:
    volumes = compose["services"]["rabbitmq"]["volumes"]
    config = ROOT / "deploy" / "rabbitmq" / "20-chat.conf"
    mounted = {v.split(":")[0]: v.split(":")[1] for v in volumes if v.startswith("./")}
    assert mounted["./deploy/rabbitmq/definitions.json"] == "/etc/rabbitmq/chat-definitions.json"
    assert mounted["./deploy/rabbitmq/20-chat.conf"].startswith("/etc/rabbitmq/conf.d/")
    settings = dict(
        line.split(" = ", 1) for line in config.read_text().splitlines() if " = " in line
    )
    assert settings["definitions.local.path"] == "/etc/rabbitmq/chat-definitions.json"


def test_kubernetes_gives_each_service_its_own_secret_key(manifests: Any, deploy: Any) -> None:
    secrets = deploy.secret_template("chat-secrets")["stringData"]
    keys = {}
    for workload in manifests.of_kind("Deployment"):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                if entry["name"] == "AMQP_URL":
                    key = entry["valueFrom"]["secretKeyRef"]["key"]
                    keys[workload["metadata"]["name"]] = key
                    assert (
                        unquote(urlsplit(secrets[key]).username or "")
                        == (workload["metadata"]["name"])
                    )
    assert set(keys) == BROKER_USERS
    assert len(set(keys.values())) == len(keys), "two services share a RabbitMQ user"


def test_the_secrets_template_lists_each_grant(deploy: Any) -> None:
    text = (ROOT / "deploy" / "k8s" / "secrets.template.yaml").read_text()
    quoted = re.findall(r"#\s+(?:([a-z-]+)\s+)?((?:'[^']*'\s*)+)$", text, re.MULTILINE)
    listed: dict[str, list[str]] = {}
    current = ""
    for name, patterns in quoted:
        current = name or current
        listed.setdefault(current, []).extend(re.findall(r"'([^']*)'", patterns))
    assert listed == {
        name: [grant.configure, grant.write, grant.read]
        for name, grant in broker_access.GRANTS.items()
    }
