# PostgreSQL from Debian bookworm's packages (15), standing in for docker-compose.yml's
# postgres:17 where no registry answers (compose.local-servers.yml swaps it in). Like the official
# image: data in /var/lib/postgresql/data (made on first start), the server in the foreground,
# client authentication from POSTGRES_HOST_AUTH_METHOD (docker-compose.yml sets trust).
ARG DEBIAN_IMAGE=chat-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# A local stand-in tracks bookworm's current package: no version pins.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && pg_dropcluster --stop 15 main \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
# The package's own system user (its uid is whatever Debian gave it).
# hadolint ignore=DL3066
USER postgres
EXPOSE 5432
# SIGINT: PostgreSQL's fast shutdown.
STOPSIGNAL SIGINT
CMD ["postgres-entrypoint"]
