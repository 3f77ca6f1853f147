#!/usr/bin/env bash
# Make sure the PostgreSQL server the tests use answers on 127.0.0.1:5432, with the test role
# `gxplab_test` (LOGIN CREATEDB, password auth; owner of database `gxplab_test`), as tests/pg.py
# expects. Installs Debian's postgresql if it is absent and we are root; starts the local cluster
# if it is stopped; creates the role and its database as the `postgres` superuser (Unix socket).
#
# The role's password is generated once and kept in the PostgreSQL password file of the user who
# runs the tests (${PGPASSFILE:-~/.pgpass}, mode 0600, line 127.0.0.1:5432:*:gxplab_test:...), which
# libpq (psql, psycopg2) reads; it is never printed. pg_hba.conf is not changed: the server's own
# password rule for 127.0.0.1 (Debian's default) is used, never a trust rule.
# Non-interactive (psql -w never prompts, PGCONNECT_TIMEOUT); idempotent; exits 1 with the reason
# when the server or the role is not usable.
set -euo pipefail
host=127.0.0.1; port=5432; role=gxplab_test; database=gxplab_test
passfile=${PGPASSFILE:-$HOME/.pgpass}
export PGCONNECT_TIMEOUT=5
say() { echo "ensure_postgres: $*"; }
fail() { echo "ensure_postgres: $*" >&2; exit 1; }
ready() { pg_isready -q -h "$host" -p "$port" -t 5 2>/dev/null; }
as_role() { psql -w -X -q -h "$host" -p "$port" -U "$role" -d "$database" -tAc 'select 1' >/dev/null 2>&1; }
is_root() { [ "$(id -u)" = 0 ]; }
# psql as the postgres superuser over the Unix socket (peer auth); SQL on stdin, never in argv.
as_postgres() { su postgres -c "psql -w -X -q -v ON_ERROR_STOP=1 -d postgres $*"; }

install_server() {
  is_root && command -v apt-get >/dev/null 2>&1 \
    || fail "PostgreSQL is not installed, and only root can install it (apt-get install postgresql)"
  say "installing Debian's postgresql"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
    || fail "apt-get install postgresql failed"
}

start_server() {
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$version" ] || fail "no cluster under /etc/postgresql to start"
  say "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start \
    || fail "pg_ctlcluster $version main start failed (see /var/log/postgresql)"
  for _ in $(seq 1 30); do ready && return 0; sleep 1; done
  fail "PostgreSQL $version started but does not answer on $host:$port"
}

# The role's password: the one in the password file, else a new one added to it.
password() {
  local line
  line=$(grep -E "^${host//./\\.}:${port}:\*:${role}:" "$passfile" 2>/dev/null | head -n 1 || true)
  if [ -n "$line" ]; then
    printf '%s' "${line#"${host}:${port}:*:${role}:"}"
    return 0
  fi
  local new
  new=$(od -An -N24 -tx1 /dev/urandom | tr -d " \n")  # coreutils: no openssl needed
  (umask 077 && touch "$passfile")
  chmod 600 "$passfile"
  printf '%s:%s:*:%s:%s\n' "$host" "$port" "$role" "$new" >>"$passfile"
  printf '%s' "$new"
}

create_role() {
  is_root || fail "role $role cannot log in to $database on $host:$port, and only root can set it \
up (su postgres): run this script as root once"
  local secret
  secret=$(password)
  say "setting up role $role (LOGIN CREATEDB, password in $passfile) and database $database"
  as_postgres <<SQL || fail "could not create role $role or database $database as postgres"
SELECT format('CREATE ROLE %I', '$role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') \gexec
ALTER ROLE $role WITH LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD '$secret';
SELECT format('CREATE DATABASE %I OWNER %I', '$database', '$role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$database') \gexec
SQL
}

if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  ready || install_server
fi
ready || start_server
if ! as_role; then
  create_role
  as_role || fail "role $role still cannot log in to $database on $host:$port with the password \
in $passfile: pg_hba.conf must allow password (scram-sha-256 or md5) logins from $host"
fi
hba=$(is_root && su postgres -c "psql -w -X -tAc 'show hba_file'" 2>/dev/null || true)
if [ -n "$hba" ] && grep -qE '^[^#]*\strust(\s|$)' "$hba"; then
  say "warning: $hba has a 'trust' rule: a user it matches connects without any password"
fi
say "PostgreSQL ready on $host:$port (role $role, database $database)"
