#!/usr/bin/env bash
# What `make test` needs besides the Python packages: Chromium (browser tests), Node.js and npm
# (the @stomp/stompjs client, the AsyncAPI parser), rabbitmqctl (each test stack gets its own
# RabbitMQ virtual host).
# Installs a missing one with apt-get when it can (root on Debian/Ubuntu); otherwise stops with
# the one command that fixes it. SKIP_BROWSER=1 skips the browser suite on purpose: then Chromium
# is not needed and the test summary says the browser tests did not run.
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1; }

if [ "${SKIP_BROWSER:-}" != "1" ] && ! have chromium && ! have chromium-browser \
  && [ -z "${CHROMIUM:-}" ]; then
  missing+=(chromium)
fi
have node || missing+=(nodejs)
have npm || missing+=(npm)

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "make test: installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "make test needs ${missing[*]}: sudo apt-get install -y ${missing[*]}" >&2
    if [[ " ${missing[*]} " == *" chromium "* ]]; then
      echo "(or SKIP_BROWSER=1 make test to run everything but the browser tests)" >&2
    fi
    exit 1
  fi
fi

if ! have rabbitmqctl; then
  echo "make test needs rabbitmqctl (the RabbitMQ server's CLI, package rabbitmq-server):" \
    "the e2e, chaos and browser suites make a virtual host per stack" >&2
  exit 1
fi
