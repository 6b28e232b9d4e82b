#!/bin/sh
# The official postgres image's interface for Debian's package: `postgres [ARGS]` initialises an empty
# $PGDATA with $POSTGRES_USER (password $POSTGRES_PASSWORD, never in argv) and database $POSTGRES_DB
# (default: the user's name), then runs the server; any other command runs as given.
set -eu
if [ "${1:-}" != postgres ]; then
    exec "$@"
fi
shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_USER:=postgres}" "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$password_file" -E UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$password_file"
    # Reachable from other hosts' clients only through listen_addresses (the compose file: 127.0.0.1).
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    database=${POSTGRES_DB:-$POSTGRES_USER}
    if [ "$database" != postgres ]; then
        createdb -U "$POSTGRES_USER" "$database"
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" "$@"
