#!/usr/bin/env bash
# make bench: a dedicated server with pg_pulse and pg_cron (Debian's postgresql-15-cron) preloaded,
# then the pulse-bench program, which prints the figures. About 12 minutes.
# Arguments select parts: scripts/bench.sh scheduler | queue | health | http | enqueue (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
PG_MAJOR=${PG_MAJOR:-15}
DIR=${BENCH_DIR:-/tmp/pg_pulse_bench}
PORT=${BENCH_PORT:-5435}
if ! dpkg -s postgresql-$PG_MAJOR-cron >/dev/null 2>&1; then
  echo "==> installing postgresql-$PG_MAJOR-cron (pg_cron, measured side by side)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q postgresql-$PG_MAJOR-cron >/dev/null
fi
# pg_net (not packaged for Debian) is measured side by side when its library is installed, tuned
# as in the HTTP issue (batch_size 10000; pgctl.sh lifts the server's open-files limit, without
# which most of a burst of 5,000 fails with "Couldn't connect to server")
PRELOAD="pg_pulse,pg_cron"; NET=()
if [ -f "$(${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config} --pkglibdir)/pg_net.so" ]; then
  PRELOAD="$PRELOAD,pg_net"; NET=("pg_net.batch_size = 10000" "pg_net.database_name = 'postgres'")
fi
scripts/pgctl.sh stop "$DIR"; rm -rf "$DIR"
scripts/pgctl.sh start "$DIR" "$PORT" \
  "shared_preload_libraries = '$PRELOAD'" "${NET[@]}" \
  "cron.database_name = 'postgres'" \
  "cron.use_background_workers = on" \
  "cron.max_running_jobs = 32" \
  "max_worker_processes = 64" \
  "max_connections = 200" \
  "log_min_messages = warning" \
  "pulse.http_allowed_hosts = '127.0.0.1'"
[ -n "${PULSE_BENCH_KEEP:-}" ] || trap 'scripts/pgctl.sh stop "$DIR"' EXIT
cargo build -q --release -p pulse-e2e --bin pulse-bench
PULSE_BENCH_PORT=$PORT target/release/pulse-bench "$@"
