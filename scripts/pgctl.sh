#!/usr/bin/env bash
# A throwaway PostgreSQL cluster with pg_pulse preloaded.
#   pgctl.sh start DIR PORT [extra postgresql.conf lines...]
#   pgctl.sh stop DIR
#   pgctl.sh restart DIR [immediate]
# Runs the server as the 'postgres' OS user (initdb refuses root), listening on 127.0.0.1 only.
set -euo pipefail
PG_MAJOR=${PG_MAJOR:-15}
# PG_BIN: another PostgreSQL build (for example a private copy used while developing in parallel)
BIN=${PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
# the server keeps error details free of Rust backtraces whatever the calling shell has set
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
cmd=$1; dir=$2
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi; }
# the server may open as many files and sockets as the hard limit allows (runuser gives the
# postgres user a soft limit of 1024, which a client opening thousands of connections, such as
# pg_net in the benchmark, runs into)
server_ctl() { as_pg bash -c 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"' pg_ctl "$@"; }
case "$cmd" in
  start)
    port=$3; shift 3
    if [ ! -f "$dir/PG_VERSION" ]; then
      mkdir -p "$dir"; chown postgres:postgres "$dir"; chmod 700 "$dir"
      as_pg "$BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
      cat >> "$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '/tmp'
shared_preload_libraries = 'pg_pulse'
pulse.database_name = 'postgres'
max_worker_processes = 32
pulse.max_running_jobs = 8
logging_collector = off
log_min_messages = warning
CONF
      for line in "$@"; do echo "$line" >> "$dir/postgresql.conf"; done
    fi
    if as_pg "$BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
      echo "server in $dir is already running"
    else
      server_ctl "$BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null
    fi
    ;;
  stop)
    if [ -f "$dir/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
      as_pg "$BIN/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null
    fi
    ;;
  restart)
    mode=${3:-fast}
    as_pg "$BIN/pg_ctl" -D "$dir" -m "$mode" -w -t 60 stop >/dev/null || true
    server_ctl "$BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null
    ;;
  *) echo "usage: $0 start DIR PORT | stop DIR | restart DIR [mode]" >&2; exit 2;;
esac
