#!/bin/bash
# Précis PostgreSQL image entrypoint: initdb on the first start (empty PGDATA), then run the
# server in the foreground. Contract (docker/postgres.Dockerfile):
#   PGDATA                   data directory, must be writable            (default /var/lib/postgresql/data)
#   POSTGRES_USER            superuser created by initdb                 (default postgres)
#   POSTGRES_PASSWORD        its password; or POSTGRES_PASSWORD_FILE     (required on first start)
#   POSTGRES_DB              database created for it                     (default: POSTGRES_USER)
#   POSTGRES_PORT            listen port on 0.0.0.0 (and ::)             (default 5432)
#   POSTGRES_INITDB_ARGS     extra initdb arguments                      (default empty)
#   POSTGRES_SOCKET_DIR      Unix socket + its lock file                 (default /tmp; the image sets
#                            PGHOST=/tmp so psql/pg_isready inside the container find it)
# Auth: scram-sha-256 for every TCP connection (any address). The Unix socket (for pg_isready /
# psql inside the container) is trusted, as in the Docker official image: only processes that can
# reach the socket directory, i.e. inside this container, use it.
# Writes only PGDATA and /tmp (socket, lock file, initdb's password file): readOnlyRootFilesystem
# works with /var/lib/postgresql and /tmp mounted writable. The socket is in /tmp rather than
# Debian's /var/run/postgresql so that one fewer volume is needed. Mount the data volume at
# /var/lib/postgresql, not at PGDATA itself: postgres requires PGDATA to be owned by its uid with
# mode 0700, which a volume's root directory (root-owned, 0777/2775) is not; the subdirectory
# made here is.
set -euo pipefail

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
port="${POSTGRES_PORT:-5432}"
bindir=/usr/lib/postgresql/15/bin
sockdir="${POSTGRES_SOCKET_DIR:-/tmp}"

if [[ -n "${POSTGRES_PASSWORD_FILE:-}" ]]; then
  [[ -r "$POSTGRES_PASSWORD_FILE" ]] || { echo "postgres: cannot read POSTGRES_PASSWORD_FILE=$POSTGRES_PASSWORD_FILE" >&2; exit 1; }
  POSTGRES_PASSWORD="$(<"$POSTGRES_PASSWORD_FILE")"
fi

mkdir -p "$PGDATA" "$sockdir"
chmod 0700 "$PGDATA"

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  [[ -n "${POSTGRES_PASSWORD:-}" ]] || { echo "postgres: PGDATA is empty and neither POSTGRES_PASSWORD nor POSTGRES_PASSWORD_FILE is set" >&2; exit 1; }
  pwfile="$(mktemp "${TMPDIR:-/tmp}/pgpw.XXXXXX")"
  trap 'rm -f "$pwfile"' EXIT
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of arguments
  "$bindir/initdb" --username="$user" --pwfile="$pwfile" --auth-host=scram-sha-256 --auth-local=trust \
    --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} >/dev/null
  rm -f "$pwfile"
  # initdb's default pg_hba.conf only admits TCP clients from loopback: admit any address, always
  # with a password (scram-sha-256).
  cat > "$PGDATA/pg_hba.conf" <<HBA
# TYPE  DATABASE  USER  ADDRESS    METHOD
local   all       all              trust
host    all       all   0.0.0.0/0  scram-sha-256
host    all       all   ::/0       scram-sha-256
HBA
  if [[ "$db" != "postgres" ]]; then
    # A private, socket-only server for the one statement (no TCP listener while unconfigured).
    "$bindir/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=$sockdir" -w -l "$sockdir/initdb-server.log" start >/dev/null \
      || { cat "$sockdir/initdb-server.log" >&2; exit 1; }
    "$bindir/psql" -h "$sockdir" -U "$user" -d postgres -v ON_ERROR_STOP=1 -q \
      -v db="$db" -v owner="$user" <<'SQL'
CREATE DATABASE :"db" OWNER :"owner";
SQL
    "$bindir/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    rm -f "$sockdir/initdb-server.log"
  fi
  echo "postgres: initialized $PGDATA (user $user, database $db)"
fi

exec "$bindir/postgres" -D "$PGDATA" -c listen_addresses='*' -c port="$port" \
  -c unix_socket_directories="$sockdir" -c password_encryption=scram-sha-256 -c logging_collector=off
