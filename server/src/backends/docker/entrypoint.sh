#!/bin/sh
# stacklab's entrypoint for its offline-built PostgreSQL 15 image.
#
# Written for stacklab (not copied from the official image), but it behaves
# like the official postgres image wherever a learner can see it:
#   - POSTGRES_PASSWORD is required to initialise a new data directory;
#   - POSTGRES_USER defaults to "postgres", POSTGRES_DB to POSTGRES_USER;
#   - initdb uses scram-sha-256 for host connections;
#   - during init a temporary server listens on the Unix socket only, so the
#     first "ready to accept connections" line is not yet reachable over TCP;
#   - the real server then replaces this script as PID 1 (so SIGINT from
#     `docker stop` reaches PostgreSQL directly: a fast shutdown).
# With an existing data directory, init is skipped.
set -eu

PGBIN=/usr/lib/postgresql/15/bin
export PATH="$PGBIN:$PATH"
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA

# `docker run image -c work_mem=8MB` style: flags go to postgres.
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi
shift

if [ "$(id -u)" = 0 ]; then
    echo "stacklab-entrypoint: refusing to run PostgreSQL as root; run the container as user postgres (docker run --user postgres ...)" >&2
    exit 1
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        cat >&2 <<'MSG'
Error: the database is not initialised and no superuser password was given.
       Set POSTGRES_PASSWORD to a non-empty value, for example
           docker run -e POSTGRES_PASSWORD=choose-one ...
       The password is required: without it PostgreSQL would accept
       connections from other containers with no authentication at all.
MSG
        exit 1
    fi

    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    echo "stacklab-entrypoint: initialising a new database cluster in $PGDATA"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    # initdb only lets in localhost over TCP; a container is reached from outside.
    printf '\nhost all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"

    # Temporary server: Unix socket only, so nobody connects over TCP mid-init.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' $*" -w start
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname postgres \
            -c "CREATE DATABASE \"$POSTGRES_DB\";"
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo
    echo "PostgreSQL init process complete; ready for start up."
    echo
else
    echo "stacklab-entrypoint: $PGDATA already holds a database; skipping initialisation"
fi

exec postgres -c listen_addresses='*' "$@"
