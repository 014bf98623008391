# Every image of the chat backend, from one file: a build stage and a runtime stage shared by
# all of them, then one short stage per image (its name, port, health check and command).
# Build from the repository root, naming the image's stage and its workspace package:
#
#   docker build --target gateway --build-arg PACKAGE=chat-gateway -t chat/gateway .
#
# `make images` builds all seven (the table is in scripts/images.py) and picks BASE_IMAGE:
# python:3.11-slim where a registry answers, a locally made Debian bookworm Python 3.11 image
# (deploy/docker/python.Dockerfile) where none does. Any base works that has python3.11 as
# `python` with venv and pip, and groupadd/useradd.
# Every image runs as uid 10001 on a read-only root filesystem (writes only to /tmp, if at all).

ARG BASE_IMAGE=python:3.11-slim

# ---- build: uv installs one package and its workspace dependencies into /app/.venv ----------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
# uv in a virtual environment of its own: a distribution's python may refuse a system-wide pip
# install (PEP 668), and uv never ends up in the image.
RUN python -m venv /opt/uv && /opt/uv/bin/pip install "uv==0.13.9"
WORKDIR /src
# Every package's third-party dependencies, once for all images (no build argument is in scope
# yet, so the layer is shared): rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-workspace --all-packages
# The workspace package of this image (chat-gateway, chat-session-svc, ..., flairbit-stub): uv
# keeps only its dependencies in the environment and removes the others.
ARG PACKAGE
RUN test -n "$PACKAGE" || { echo "build with --build-arg PACKAGE=<workspace package>" >&2; exit 1; }; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-install-workspace --package "$PACKAGE"
# Then the workspace packages, installed as wheels (no editable links back to /src). All of them
# are copied; uv installs only PACKAGE and the workspace packages it depends on.
COPY libs/common/ libs/common/
COPY libs/stomp/ libs/stomp/
COPY services/ services/
COPY migrations/ migrations/
COPY dev/flairbit-stub/ dev/flairbit-stub/
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable --package "$PACKAGE"

# ---- runtime: the same base, the virtual environment, nothing else --------------------------
FROM ${BASE_IMAGE} AS runtime
RUN groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin chat
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001:10001
STOPSIGNAL SIGTERM
# The base may have no curl: python's urllib asks /healthz on PORT (non-2xx or no answer fails).
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=2)"]

# ---- one stage per image ---------------------------------------------------------------------
# Exec-form CMD everywhere: python is PID 1 and receives SIGTERM itself (graceful drain).

FROM runtime AS gateway
LABEL org.opencontainers.image.title="chat/gateway" \
      org.opencontainers.image.description="gateway: the one public URL (REST, /ws proxied to ws-edge, OpenAPI, demo web client)"
ENV HOST=0.0.0.0 PORT=8080
EXPOSE 8080
CMD ["python", "-m", "gateway"]

FROM runtime AS session-svc
LABEL org.opencontainers.image.title="chat/session-svc" \
      org.opencontainers.image.description="session-svc: chat sessions, membership checks, FlairBit profile look-ups"
ENV HOST=0.0.0.0 PORT=8081
EXPOSE 8081
CMD ["python", "-m", "session_svc"]

FROM runtime AS message-svc
LABEL org.opencontainers.image.title="chat/message-svc" \
      org.opencontainers.image.description="message-svc: messages and their outbox rows, history, unread, receipts, the chat.send consumer"
ENV HOST=0.0.0.0 PORT=8082
EXPOSE 8082
CMD ["python", "-m", "message_svc"]

FROM runtime AS ws-edge
LABEL org.opencontainers.image.title="chat/ws-edge" \
      org.opencontainers.image.description="ws-edge: the STOMP 1.2 WebSocket edge (/ws, with /healthz /readyz /metrics on the same port)"
ENV HOST=0.0.0.0 PORT=8083
EXPOSE 8083
CMD ["python", "-m", "ws_edge"]

FROM runtime AS outbox-relay
LABEL org.opencontainers.image.title="chat/outbox-relay" \
      org.opencontainers.image.description="outbox-relay: drains the outbox to RabbitMQ (/healthz /readyz /metrics only)"
ENV HOST=0.0.0.0 PORT=8084
EXPOSE 8084
CMD ["python", "-m", "outbox_relay"]

# A job, not a server: applies the SQL migrations to DATABASE_URL and exits 0. Add --create-db
# where the role may create databases (docker-compose.yml does); on a managed PostgreSQL the
# database usually exists already.
FROM runtime AS migrations
LABEL org.opencontainers.image.title="chat/migrations" \
      org.opencontainers.image.description="migrations: applies the chat backend's SQL migrations, then exits"
# The SQL files are not part of the wheel: they live beside it, named by CHAT_MIGRATIONS_DIR.
COPY migrations/sql/ /app/sql/
ENV CHAT_MIGRATIONS_DIR=/app/sql
HEALTHCHECK NONE
CMD ["python", "-m", "chat_migrations"]

# Development only (docker-compose.yml, never deployed): the FlairBit stand-in. The same image
# runs the compose `keys` one-shot (`python /app/scripts/stack.py keys`), which writes the chat
# service's development key pair to the shared key volume at /var/lib/chat-dev/keys.
FROM runtime AS flairbit-stub
LABEL org.opencontainers.image.title="chat/flairbit-stub" \
      org.opencontainers.image.description="flairbit-stub: development stand-in for FlairBit (dev tokens, JWKS, profiles)"
# The mount point of the key volume: a new named volume takes this directory's owner (10001).
USER 0:0
RUN mkdir -p /var/lib/chat-dev/keys && chown -R 10001:10001 /var/lib/chat-dev
USER 10001:10001
COPY scripts/stack.py /app/scripts/stack.py
ENV FLAIRBIT_HOST=0.0.0.0 FLAIRBIT_PORT=8090 FLAIRBIT_KEY_DIR=/var/lib/chat-dev/keys
EXPOSE 8090
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ['FLAIRBIT_PORT'], timeout=2)"]
CMD ["python", "-m", "flairbit_stub"]
