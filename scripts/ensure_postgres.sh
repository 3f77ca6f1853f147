#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 with a database `test` (trust auth), as the
# PostgreSQL tests expect. Starts the local cluster if it is installed but stopped; installs Debian's
# postgresql if it is absent and we are root. Prints what it did; never prints secrets.
set -u
host=127.0.0.1; port=5432
ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure_postgres: installing Debian's postgresql"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "ensure_postgres: PostgreSQL is not installed and cannot be installed here (not root)"; exit 0
  fi
fi
if ! ready; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "ensure_postgres: starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi
if ! ready; then echo "ensure_postgres: PostgreSQL still not reachable on $host:$port"; exit 0; fi
# The tests connect as `postgres` to database `test` with trust auth on 127.0.0.1.
if ! psql -h "$host" -p "$port" -U postgres -d test -tAc 'select 1' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    su postgres -c "psql -tAc \"select 1 from pg_database where datname='test'\"" | grep -q 1 \
      || su postgres -c "createdb test"
    hba=$(su postgres -c "psql -tAc 'show hba_file'")
    if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
      sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
      su postgres -c "psql -tAc 'select pg_reload_conf()'" >/dev/null
    fi
  fi
fi
psql -h "$host" -p "$port" -U postgres -d test -tAc 'select 1' >/dev/null 2>&1 \
  && echo "ensure_postgres: PostgreSQL ready on $host:$port (database test)" \
  || echo "ensure_postgres: cannot connect as postgres to database test on $host:$port"
