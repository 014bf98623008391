# RabbitMQ from Debian bookworm's packages (3.10, with the management plugin), standing in for
# docker-compose.yml's rabbitmq:4-management where no registry answers
# (compose.local-servers.yml swaps it in). 3.10 reads /etc/rabbitmq/conf.d/*.conf and imports
# definitions at boot (definitions.import_backend), so deploy/rabbitmq/ works unchanged.
ARG DEBIAN_IMAGE=chat-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# A local stand-in tracks bookworm's current package: no version pins.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* \
    && rabbitmq-plugins enable --offline rabbitmq_management \
    && mkdir -p /etc/rabbitmq/conf.d \
    && chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /etc/rabbitmq/enabled_plugins
# Logs to standard output; the Erlang cookie in the data volume (the CLI reads it from HOME).
ENV RABBITMQ_LOGS=- HOME=/var/lib/rabbitmq LANG=C.UTF-8
WORKDIR /var/lib/rabbitmq
# The package's own system user (its uid is whatever Debian gave it).
# hadolint ignore=DL3066
USER rabbitmq
EXPOSE 5672 15672
# Not /usr/sbin/rabbitmq-server: Debian's wrapper sends the server's output to a file.
CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
