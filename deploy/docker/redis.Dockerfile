# Redis from Debian bookworm's packages (7.0), standing in for docker-compose.yml's
# redis:7-alpine where no registry answers (compose.local-servers.yml swaps it in). Like the
# official image's default: every interface, nothing kept on disk.
ARG DEBIAN_IMAGE=chat-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# A local stand-in tracks bookworm's current package: no version pins.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*
# The package's own system user (its uid is whatever Debian gave it).
# hadolint ignore=DL3066
USER redis
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
