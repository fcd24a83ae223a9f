-- Queue functions: declared by hand because their arguments are regclass / anyarray / anyelement.
-- None is SECURITY DEFINER: every statement runs as the caller, so table privileges and
-- row-level security apply as to the caller's own queries.
CREATE FUNCTION pulse.make_queue(queue regclass) RETURNS text[]
    VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'make_queue_wrapper';
CREATE FUNCTION pulse.claim_batch(queue regclass, batch_size integer DEFAULT 10,
                                  lock_ttl interval DEFAULT '15 minutes', worker text DEFAULT NULL)
    RETURNS SETOF jsonb VOLATILE ROWS 10 LANGUAGE c AS 'MODULE_PATHNAME', 'claim_batch_wrapper';
CREATE FUNCTION pulse.complete(queue regclass, ids anyarray, worker text DEFAULT NULL) RETURNS bigint
    VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'complete_wrapper';
CREATE FUNCTION pulse.fail(queue regclass, id anyelement, error text, retry boolean DEFAULT true,
                           worker text DEFAULT NULL, backoff interval DEFAULT '30 seconds',
                           max_backoff interval DEFAULT '1 hour') RETURNS text
    VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'fail_wrapper';
CREATE FUNCTION pulse.extend_lock(queue regclass, id anyelement, ttl interval DEFAULT '15 minutes',
                                  worker text DEFAULT NULL) RETURNS boolean
    VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'extend_lock_wrapper';
CREATE FUNCTION pulse.retry_failed(queue regclass, reset_attempts boolean DEFAULT true) RETURNS bigint
    VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'retry_failed_all_wrapper';
CREATE FUNCTION pulse.retry_failed(queue regclass, ids anyarray, reset_attempts boolean DEFAULT true)
    RETURNS bigint VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'retry_failed_ids_wrapper';
CREATE FUNCTION pulse.queue_health(queue regclass,
    OUT queued bigint, OUT ready bigint, OUT delayed bigint, OUT processing bigint, OUT stuck bigint,
    OUT completed bigint, OUT failed bigint, OUT blocked bigint, OUT oldest_ready_age interval,
    OUT completed_last_hour bigint, OUT failed_last_hour bigint)
    RETURNS SETOF record STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'queue_health_wrapper';

COMMENT ON FUNCTION pulse.make_queue(regclass) IS
'Makes an existing table a work queue: adds the missing columns (status, priority, attempts, max_attempts, run_after, locked_by, locked_until, last_error, finished_at), a status check and the claim indexes; validates existing ones. Returns what it did (empty when nothing was needed). Idempotent.';
COMMENT ON FUNCTION pulse.claim_batch(regclass, integer, interval, text) IS
'Atomically claims up to batch_size ready rows (queued and run_after <= now(), or processing with an expired lock), highest priority first then oldest; marks them processing, locked by worker until now() + lock_ttl, counts the attempt, and returns each row as jsonb (in no particular order). A row whose lock expired on its last attempt (attempts >= max_attempts) is dead-lettered (failed, last_error says the lease expired) instead of claimed again. Concurrent callers never wait for or share rows.';
COMMENT ON FUNCTION pulse.complete(regclass, anyarray, text) IS
'Marks processing rows (by primary key) completed; with worker, only rows that worker holds. Returns the number of rows completed.';
COMMENT ON FUNCTION pulse.fail(regclass, anyelement, text, boolean, text, interval, interval) IS
'Records a failed attempt of a processing row: back to queued after exponential backoff with jitter (backoff, doubling, capped at max_backoff) until max_attempts, then failed (dead letter), with last_error. Returns the new status, or NULL if the row is not processing (or not held by worker).';
COMMENT ON FUNCTION pulse.extend_lock(regclass, anyelement, interval, text) IS
'Heartbeat for long work: extends the lock of a processing row to now() + ttl. Returns false if the row is not processing (or not held by worker).';
COMMENT ON FUNCTION pulse.retry_failed(regclass, boolean) IS
'Re-drives every dead letter (status failed) of a queue: queued again now, attempts reset unless reset_attempts is false. Returns the number of rows.';
COMMENT ON FUNCTION pulse.retry_failed(regclass, anyarray, boolean) IS
'Re-drives the dead letters with the given primary keys. Returns the number of rows.';
COMMENT ON FUNCTION pulse.queue_health(regclass) IS
'One row about a queue: rows by status, ready and delayed queued rows, stuck rows (expired locks), age of the oldest ready row, completions and failures in the last hour. Scans the table once.';
