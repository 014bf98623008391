"""The whole stack started with `make up` on its own ports, run dir and database."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from chat_testing.stack import ROOT, Stack, port_base, running_stack

__all__ = ["ROOT", "Stack", "port_base"]

# Per pytest process, so that stacks started side by side never share a database or vhost.
E2E_DATABASE_URL = os.environ.get(
    "E2E_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/chat_e2e_{os.getpid()}"
)
E2E_AMQP_VHOST = os.environ.get("E2E_AMQP_VHOST", f"chat_e2e_{os.getpid()}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("stack"),
        database_url=E2E_DATABASE_URL,
        vhost=E2E_AMQP_VHOST,
        first_port=18080,
    ) as started:
        yield started
