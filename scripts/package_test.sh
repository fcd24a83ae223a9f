#!/usr/bin/env bash
# make package-test: installs the Debian package from dist/ (make package) with dpkg -i, after
# removing pg_pulse's files that `make install` may have put there, so that the package alone
# supplies the library and the scripts; then a fresh PostgreSQL 15 server (which never sees the
# build tree) runs the demo's jobs, and the script checks that they ran. As root (dpkg).
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls dist/postgresql-15-pulse_*_amd64.deb 2>/dev/null | tail -1)
[ -n "$deb" ] || { echo "no package in dist/: run make package" >&2; exit 1; }
DIR=/tmp/pg_pulse_pkg
PORT=${PKG_PORT:-5436}
PSQL="psql -X -q -h 127.0.0.1 -p $PORT -U postgres -d postgres -v ON_ERROR_STOP=1"

rm -f /usr/lib/postgresql/15/lib/pg_pulse.so /usr/share/postgresql/15/extension/pg_pulse*
dpkg -i "$deb" >/dev/null
dpkg -s postgresql-15-pulse | grep -q '^Status: install ok installed'
echo "==> installed $deb: $(dpkg -L postgresql-15-pulse | grep -c pg_pulse) files"

cargo build -q --release -p pulse-e2e --bin pulse-demo-http
export PG_BIN=/usr/lib/postgresql/15/bin
scripts/pgctl.sh stop "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR" "$DIR.http.log"
scripts/pgctl.sh start "$DIR" "$PORT" "pulse.http_allowed_hosts = '127.0.0.1'"
HTTP_PID=
trap '[ -n "$HTTP_PID" ] && kill $HTTP_PID 2>/dev/null; scripts/pgctl.sh stop "$DIR" >/dev/null 2>&1; rm -rf "$DIR"' EXIT
HTTP_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/release/pulse-demo-http "$HTTP_PORT" > "$DIR.http.log" 2>&1 &
HTTP_PID=$!

$PSQL -v http="http://127.0.0.1:$HTTP_PORT" -f examples/demo.sql > "$DIR.demo.log"
version=$($PSQL -At -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_pulse'")
echo "==> the demo ran against pg_pulse $version from the package"
# the demo's jobs ran: SQL and HTTP runs succeeded, the failing one failed, requests arrived
for _ in $(seq 1 60); do
  ok=$($PSQL -At -c "SELECT count(*) FILTER (WHERE kind = 'sql' AND status = 'succeeded') > 0
                          AND count(*) FILTER (WHERE kind = 'http' AND status = 'succeeded') > 0
                          AND count(*) FILTER (WHERE job_name = 'always-fails' AND status = 'failed') > 0
                     FROM pulse.job_runs")
  [ "$ok" = t ] && grep -q ' /ok/' "$DIR.http.log" && break
  sleep 0.5
done
[ "$ok" = t ] || { echo "the demo's jobs did not run as expected:" >&2; $PSQL -c "SELECT job_name, kind, status, message FROM pulse.job_runs ORDER BY run_id" >&2; exit 1; }
grep -q ' /ok/' "$DIR.http.log" || { echo "no request reached the demo endpoint" >&2; exit 1; }
echo "==> package test passed: $($PSQL -At -c "SELECT count(*) FROM pulse.job_runs WHERE status = 'succeeded'") runs succeeded, $(grep -c ' /ok/' "$DIR.http.log") requests arrived"
rm -f "$DIR.http.log" "$DIR.demo.log"
