-- pg_pulse 0.3.0 -> 0.4.0 (ALTER EXTENSION pg_pulse UPDATE runs this file in one transaction).
-- It turns a 0.3.0 installation into exactly what a fresh 0.4.0 install creates (sql/schema.sql,
-- sql/queue.sql, sql/finalize.sql and the functions pgrx generates), keeping every job, run,
-- secret, request and queue row. Sections are independent: append new ones at the end. Object
-- definitions are copied verbatim from the fresh-install SQL and from `cargo pgrx schema` of
-- 0.4.0, so that the upgraded catalog and a fresh one dump identically
-- (pgrx-tests/tests/upgrade.rs compares them).
\echo Use "ALTER EXTENSION pg_pulse UPDATE TO '0.4.0'" to load this file. \quit
