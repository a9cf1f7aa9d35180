#!/usr/bin/env bash
# A local PostgreSQL server for the distributed-search test (tests/test_search_postgres.py): installs Debian's
# postgresql when missing, starts its cluster, creates the role and database hwgen, and prints the storage URL
# on stdout, e.g. `export HWGEN_TEST_POSTGRES_URL=$(bash scripts/postgres.sh)`. Needs root (apt-get, the
# postgres user). When it cannot, it exits nonzero with one line on stderr.
# The server listens on localhost only (Debian's default); the fixed password is for this test database.
set -euo pipefail
cd "$(dirname "$0")/.."
ROLE=hwgen
DB=hwgen
PASSWORD=hwgen
log() { printf 'postgres: %s\n' "$*" >&2; }
fail() { log "error: $*"; exit 1; }
last() { printf '%s\n' "$1" | grep -v '^\s*$' | tail -n 1; }

[ "$(id -u)" = 0 ] || fail "needs root to install and start PostgreSQL"
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || fail "postgresql is not installed and there is no apt-get"
  log "apt-get install postgresql"
  out=$(apt-get update -qq 2>&1) || fail "apt-get update: $(last "$out")"
  out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql 2>&1) \
    || fail "apt-get install postgresql: $(last "$out")"
fi

# The newest installed version's cluster "main" (created by the package; created here if it is not there).
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {found = 1} END {exit !found}'; then
  log "pg_createcluster $version main"
  out=$(pg_createcluster "$version" main 2>&1) || fail "pg_createcluster $version main: $(last "$out")"
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online" {found = 1} END {exit !found}'
then
  log "pg_ctlcluster $version main start"
  out=$(pg_ctlcluster "$version" main start 2>&1) || fail "pg_ctlcluster $version main start: $(last "$out")"
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')

# Role and database, as the postgres superuser over the local socket.
sql() { (cd / && runuser -u postgres -- psql -p "$port" -X -q -t -A -v ON_ERROR_STOP=1 -c "$1" 2>&1); }
out=$(sql "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'") || fail "psql: $(last "$out")"
if [ "$out" != 1 ]; then
  out=$(sql "CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'") || fail "CREATE ROLE $ROLE: $(last "$out")"
fi
out=$(sql "SELECT 1 FROM pg_database WHERE datname = '$DB'") || fail "psql: $(last "$out")"
if [ "$out" != 1 ]; then
  out=$(sql "CREATE DATABASE $DB OWNER $ROLE") || fail "CREATE DATABASE $DB: $(last "$out")"
fi

# The URL works over TCP with the password, as the tests use it.
url="postgresql://$ROLE:$PASSWORD@127.0.0.1:$port/$DB"
out=$(cd / && PGPASSWORD=$PASSWORD psql -X -q -t -A -h 127.0.0.1 -p "$port" -U "$ROLE" -d "$DB" -c "SELECT 1" 2>&1) \
  || fail "connecting as $ROLE to 127.0.0.1:$port/$DB: $(last "$out")"
log "server running: ${url/:$PASSWORD@/:***@}"
printf '%s\n' "$url"
