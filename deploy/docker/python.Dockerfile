# A Python 3.11 base image made from Debian bookworm's own packages, for machines where no
# registry serves python:3.11-slim: `make images` builds it FROM the Debian image it makes with
# debootstrap (chat-local/debian:bookworm). That image carries the CA certificates of the machine
# that made it in /usr/local/share/chat/ca-certificates.crt, so that pip and uv download through
# whatever TLS-inspecting proxy that machine trusts.
ARG DEBIAN_IMAGE=chat-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# python-is-python3: `python` is the interpreter, as in the official image.
# A local stand-in tracks bookworm's current package: no version pins.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv python-is-python3 \
    && rm -rf /var/lib/apt/lists/*
ENV SSL_CERT_FILE=/usr/local/share/chat/ca-certificates.crt \
    PIP_CERT=/usr/local/share/chat/ca-certificates.crt \
    LANG=C.UTF-8
