-- Documentation of every SQL function, and a wake-up for the scheduler once the catalog exists.
COMMENT ON FUNCTION pulse.schedule_job(text, text, text, text, boolean, interval, text, text, integer, jsonb, integer, interval, jsonb, text) IS
'Creates a recurring job, or updates your job of that name in place (same id, history kept): schedule_job(job_name, schedule, command, timezone, enabled, timeout, overlap, comment, alert_after_failures, alert, max_attempts, retry_backoff, http, database). A job runs SQL (command) or sends an HTTP request (http => pulse.http_request(...)), as you, in a session of yours (you need LOGIN), in database (default: this one; you need CONNECT there). Returns the job id. Safe to repeat in migrations.';
COMMENT ON FUNCTION pulse.schedule_once(text, timestamptz, text, boolean, interval, text, integer, jsonb, integer, interval, jsonb, text) IS
'Creates or updates a one-shot job that runs once at run_at (at once if run_at has passed): SQL (command) or an HTTP request (http), in database (default: this one). Returns the job id.';
COMMENT ON FUNCTION pulse.unschedule_job(text) IS
'Removes a job; its run history stays in pulse.job_runs. Returns false (with a NOTICE) if there was no such job.';
COMMENT ON FUNCTION pulse.toggle_job(text, boolean) IS
'Pauses (false) or resumes (true) a job, keeping its definition and history. Returns the new state.';
COMMENT ON FUNCTION pulse.alter_job(text, text, text, text, boolean, interval, text, text, text, timestamptz, integer, jsonb, integer, interval, jsonb, text) IS
'Changes any field of a job; NULL leaves a field unchanged; command => makes it a SQL job, http => an HTTP job. new_name renames, timeout => ''0'' removes the timeout, comment => '''' clears the comment, alert_after_failures => 0 and alert => ''null'' return to the defaults, database => ''x'' moves it to database x and database => '''' back to this one. Returns the job id.';
COMMENT ON FUNCTION pulse.run_job(text) IS
'Runs a job now, out of schedule (paused jobs too), and returns the run id: the replacement for hand-written trigger_*() helpers.';
COMMENT ON FUNCTION pulse.cancel_run(bigint) IS
'Cancels a queued run, or stops a running one (status cancelled). Returns true if the run was queued or running.';
COMMENT ON FUNCTION pulse.next_runs(text, text, integer, timestamptz) IS
'The next count instants (default 5) of a schedule strictly after after (default now()), in a time zone (default pulse.timezone; any name SET timezone accepts, with the rules of PostgreSQL''s zone files as they are now): a preview and a validator. ''N seconds'' fires whenever Unix time is a multiple of N.';
COMMENT ON FUNCTION pulse.current_run() IS
'Inside a job''s command: the run being executed (run_id, job_id, job_name, scheduled_for, attempt, trigger). No row elsewhere.';
COMMENT ON FUNCTION pulse._wake_scheduler() IS
'Internal: wakes the pg_pulse scheduler when the calling transaction commits.';

COMMENT ON FUNCTION pulse.set_secret(text, text) IS
'Stores a secret of yours for {{secret:NAME}} placeholders in HTTP requests (true: created, false: replaced); 8 to 65536 bytes. The value is stored sealed (encrypted, bound to you and the name) and readable by no role; pg_pulse keeps it out of the server log (no STATEMENT line, literals masked). With log_statement = ''all'' prefer pulse.set_secret_from_file.';
COMMENT ON FUNCTION pulse.http_request(text, text, jsonb, jsonb, interval, boolean, text, boolean) IS
'Builds and validates an HTTP request description (method GET/POST/PUT/PATCH/DELETE/HEAD, http(s) URL, headers, JSON body or body_text, timeout, follow_redirects, body_template) as jsonb. Placeholders {{secret:NAME}}, {{setting:name}}, {{job_name}}, {{run_id}}, {{scheduled_for}}, {{attempt}} in the URL and header values (and in the body only with body_template => true) are checked now and resolved only when the request is sent; an unmarked body is sent as it is. Sizes are limited by pulse.http_max_url_bytes, pulse.http_max_header_bytes, pulse.http_max_headers_bytes and pulse.http_max_request_bytes, placeholders filled in.';
COMMENT ON FUNCTION pulse.http_post(text, jsonb, jsonb, interval, jsonb, boolean) IS
'POSTs body (JSON) to url once the calling transaction commits (never if it rolls back); returns the request id at once. Results in pulse.http_responses. Placeholders such as {{secret:NAME}} in url and headers are resolved when it is sent; body and params are sent as they are (body_template => true fills in placeholders in the body). Works in triggers.';
COMMENT ON FUNCTION pulse.http_get(text, jsonb, jsonb, interval) IS
'GETs url with params (a JSON object, added to the query string) once the calling transaction commits; returns the request id. Results in pulse.http_responses.';
COMMENT ON FUNCTION pulse.http_delete(text, jsonb, jsonb, interval) IS
'DELETEs url with params once the calling transaction commits; returns the request id. Results in pulse.http_responses.';
COMMENT ON FUNCTION pulse.http(jsonb, integer, interval) IS
'Sends a request built with pulse.http_request once the calling transaction commits, with up to max_attempts attempts on connection errors, timeouts, 429 and 5xx (backoff from retry_backoff, honouring Retry-After). Returns the request id.';
COMMENT ON FUNCTION pulse.drop_secret(text) IS
'Removes a secret of yours; false (and a NOTICE) if there was none. NULL: error 22004.';
COMMENT ON FUNCTION pulse.set_secret_from_file(text, text, text) IS
'Superusers: stores the content of a file the server can read (absolute path, or relative to the data directory; one trailing newline removed) as secret name of role owner (default: you), so that the value is in no statement text and no log. Errors name the file, never its content.';
REVOKE ALL ON FUNCTION pulse.set_secret_from_file(text, text, text) FROM PUBLIC;

REVOKE ALL ON FUNCTION pulse._wake_scheduler() FROM PUBLIC;
SELECT pulse._wake_scheduler();
COMMENT ON FUNCTION pulse.scheduler_health() IS
'One row per job you can see: schedule, next and last run, runs and failures in the last 24 hours, success rate, average and p95 duration, consecutive failures, health (healthy, degraded, failing, overdue, paused, never_run) with a reason to act on, and the database the job runs in.';
COMMENT ON FUNCTION pulse.scheduler_status() IS
'One row: is the scheduler alive (pid, started at, last heartbeat, database), job counts (total, enabled, paused, failing, overdue), runs and failures in the last hour, the share of healthy jobs, whether the HTTP worker is alive, how many due after-commit requests wait and for how long, and a verdict HEALTHY or NEEDS_ATTENTION (both workers alive, thresholds: pulse.status_max_failing_jobs, pulse.status_min_health_pct, pulse.status_max_request_wait).';
COMMENT ON FUNCTION pulse.restart_workers() IS
'Superusers: stops the scheduler and the HTTP worker; the server starts them again within about a second. SQL runs in progress fail (and are retried if their job allows); requests being sent are sent again. Returns how many workers were signalled.';
REVOKE ALL ON FUNCTION pulse.restart_workers() FROM PUBLIC;
COMMENT ON FUNCTION pulse.import_pg_cron(boolean, boolean, text[]) IS
'Superusers: makes pg_cron''s jobs (cron.job) pg_pulse jobs of the same owners, schedules, time zone (cron.timezone, else GMT) and databases; a command that is one net.http_post/get/delete call becomes an HTTP job, with {{setting:X}} for current_setting(''X'') or {{secret:...}} for the settings listed in settings_as_secrets (copied into the owner''s secrets). One row per pg_cron job: kind, action (create, update, unchanged, skip) and a note. dry_run (the default) changes nothing; disable_source sets the imported pg_cron jobs inactive in the same transaction. Repeatable.';
REVOKE ALL ON FUNCTION pulse.import_pg_cron(boolean, boolean, text[]) FROM PUBLIC;
