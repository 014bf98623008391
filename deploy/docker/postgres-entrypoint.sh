#!/bin/sh
# Make the cluster on first start (an empty data volume), then run PostgreSQL in the foreground.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    auth="${POSTGRES_HOST_AUTH_METHOD:?set POSTGRES_HOST_AUTH_METHOD (trust, scram-sha-256, ...)}"
    initdb --pgdata="$PGDATA" --username=postgres --auth-local=trust --auth-host="$auth" \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all $auth" >>"$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA"
