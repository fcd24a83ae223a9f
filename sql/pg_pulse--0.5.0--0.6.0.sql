-- pg_pulse 0.5.0 -> 0.6.0 (ALTER EXTENSION pg_pulse UPDATE runs this file in one transaction).
-- It turns a 0.5.0 installation into exactly what a fresh 0.6.0 install creates, keeping every
-- row (pgrx-tests/tests/upgrade.rs compares them). Sections are independent: append new ones at
-- the end.
\echo Use "ALTER EXTENSION pg_pulse UPDATE TO '0.6.0'" to load this file. \quit

------------------------------------------------------------------------------------------------
-- 1. Time semantics (issue 19). No table changes: the library reads zone rules from
--    PostgreSQL's zone directory at run time, and 'N seconds' is a true period (unchanged for
--    divisors of 60). The preview's documentation says so.
------------------------------------------------------------------------------------------------

COMMENT ON FUNCTION pulse.next_runs(text, text, integer, timestamptz) IS
'The next count instants (default 5) of a schedule strictly after after (default now()), in a time zone (default pulse.timezone; any name SET timezone accepts, with the rules of PostgreSQL''s zone files as they are now): a preview and a validator. ''N seconds'' fires whenever Unix time is a multiple of N.';
