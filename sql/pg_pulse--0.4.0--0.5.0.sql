-- pg_pulse 0.4.0 -> 0.5.0 (ALTER EXTENSION pg_pulse UPDATE runs this file in one transaction).
-- It turns a 0.4.0 installation into exactly what a fresh 0.5.0 install creates (sql/schema.sql,
-- sql/queue.sql, sql/finalize.sql and the functions pgrx generates), keeping every row. Sections
-- are independent: append new ones at the end. Object definitions are copied verbatim from the
-- fresh-install SQL and from `cargo pgrx schema` of 0.5.0, so that the upgraded catalog and a
-- fresh one dump identically (pgrx-tests/tests/upgrade.rs compares them).
\echo Use "ALTER EXTENSION pg_pulse UPDATE TO '0.5.0'" to load this file. \quit

------------------------------------------------------------------------------------------------
-- 1. Moving in from pg_cron (issue 17): pulse.import_pg_cron() and the table that remembers
--    which job came from which pg_cron job.
------------------------------------------------------------------------------------------------

CREATE TABLE pulse.job_import (
    job_id      bigint      PRIMARY KEY REFERENCES pulse.job (job_id) ON DELETE CASCADE,
    cron_jobid  bigint      NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON pulse.job_import FROM PUBLIC;
COMMENT ON TABLE pulse.job_import IS 'The jobs pulse.import_pg_cron() created from pg_cron jobs: the next import brings these up to date and leaves other jobs of the same name alone';
COMMENT ON COLUMN pulse.job_import.cron_jobid IS 'The pg_cron job (cron.job.jobid) it was last imported from';

-- pg_pulse::jobs::import::api::import_pg_cron
CREATE  FUNCTION "import_pg_cron"(
	"dry_run" bool DEFAULT true, /* Option < bool > */
	"disable_source" bool DEFAULT false, /* Option < bool > */
	"settings_as_secrets" TEXT[] DEFAULT '{}' /* :: std :: option :: Option < Vec < Option < String > > > */
) RETURNS TABLE (
	"source_jobid" bigint,  /* i64 */
	"source_jobname" TEXT,  /* Option < String > */
	"job_name" TEXT,  /* String */
	"owner" TEXT,  /* String */
	"database" TEXT,  /* String */
	"kind" TEXT,  /* String */
	"action" TEXT,  /* String */
	"note" TEXT  /* String */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'import_pg_cron_wrapper';

COMMENT ON FUNCTION pulse.import_pg_cron(boolean, boolean, text[]) IS
'Superusers: makes pg_cron''s jobs (cron.job) pg_pulse jobs of the same owners, schedules, time zone (cron.timezone, else GMT) and databases; a command that is one net.http_post/get/delete call becomes an HTTP job, with {{setting:X}} for current_setting(''X'') or {{secret:...}} for the settings listed in settings_as_secrets (copied into the owner''s secrets). One row per pg_cron job: kind, action (create, update, unchanged, skip) and a note. dry_run (the default) changes nothing; disable_source sets the imported pg_cron jobs inactive in the same transaction. Repeatable.';
REVOKE ALL ON FUNCTION pulse.import_pg_cron(boolean, boolean, text[]) FROM PUBLIC;

------------------------------------------------------------------------------------------------
-- 2. PostgreSQL 18 names NOT NULL constraints, and 0.4.0's rename of pulse.secret.value to
--    sealed kept the old name (secret_value_not_null): the name a fresh install gives it.
--    Nothing to do before 18 (NOT NULL is no named constraint there).
------------------------------------------------------------------------------------------------

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                WHERE conrelid = 'pulse.secret'::pg_catalog.regclass AND conname = 'secret_value_not_null') THEN
        ALTER TABLE pulse.secret RENAME CONSTRAINT secret_value_not_null TO secret_sealed_not_null;
    END IF;
END
$$;
