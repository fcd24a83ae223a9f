-- pg_pulse 0.3.0 -> 0.4.0 (ALTER EXTENSION pg_pulse UPDATE runs this file in one transaction).
-- It turns a 0.3.0 installation into exactly what a fresh 0.4.0 install creates (sql/schema.sql,
-- sql/queue.sql, sql/finalize.sql and the functions pgrx generates), keeping every job, run,
-- secret, request and queue row. Sections are independent: append new ones at the end. Object
-- definitions are copied verbatim from the fresh-install SQL and from `cargo pgrx schema` of
-- 0.4.0, so that the upgraded catalog and a fresh one dump identically
-- (pgrx-tests/tests/upgrade.rs compares them).
\echo Use "ALTER EXTENSION pg_pulse UPDATE TO '0.4.0'" to load this file. \quit

-- 16.3 Secrets encrypted at rest (issue 16, item 3: secrets)
-- pulse.secret.value (plaintext) becomes pulse.secret.sealed (bytea): each value is sealed for its
-- owner and name with the cluster's key (PGDATA/pg_pulse/secret.key, created here if missing) by
-- a function of the new library that exists only during this step. The column keeps its place
-- (ALTER TYPE + RENAME, no dropped column). Plaintext written before the upgrade stays in old WAL
-- segments and backups: set the secrets again to rotate them.
CREATE FUNCTION pulse.seal_secret_for_upgrade(owner oid, name text, value text) RETURNS bytea
    STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'seal_secret_for_upgrade_wrapper';
ALTER TABLE pulse.secret ALTER COLUMN value TYPE bytea
    USING pulse.seal_secret_for_upgrade(owner, name, value);
ALTER TABLE pulse.secret RENAME COLUMN value TO sealed;
DROP FUNCTION pulse.seal_secret_for_upgrade(oid, text, text);
COMMENT ON TABLE pulse.secret IS 'Secret values for {{secret:NAME}} placeholders, sealed with the key in PGDATA/pg_pulse/secret.key for their owner and name; no role may read it: set them with pulse.set_secret, list them in pulse.secrets';
COMMENT ON COLUMN pulse.secret.sealed IS 'The value sealed: version byte, 24-byte nonce, XChaCha20-Poly1305 ciphertext with the owner and name as associated data';

-- src/http/secrets.rs:116
-- pg_pulse::http::secrets::set_secret_from_file
CREATE  FUNCTION "set_secret_from_file"(
	"name" TEXT, /* Option < & str > */
	"path" TEXT, /* Option < & str > */
	"owner" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bool /* bool */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_secret_from_file_wrapper';

COMMENT ON FUNCTION pulse.set_secret(text, text) IS
'Stores a secret of yours for {{secret:NAME}} placeholders in HTTP requests (true: created, false: replaced); 8 to 65536 bytes. The value is stored sealed (encrypted, bound to you and the name) and readable by no role; pg_pulse keeps it out of the server log (no STATEMENT line, literals masked). With log_statement = ''all'' prefer pulse.set_secret_from_file.';
COMMENT ON FUNCTION pulse.drop_secret(text) IS
'Removes a secret of yours; false (and a NOTICE) if there was none. NULL: error 22004.';
COMMENT ON FUNCTION pulse.set_secret_from_file(text, text, text) IS
'Superusers: stores the content of a file the server can read (absolute path, or relative to the data directory; one trailing newline removed) as secret name of role owner (default: you), so that the value is in no statement text and no log. Errors name the file, never its content.';
REVOKE ALL ON FUNCTION pulse.set_secret_from_file(text, text, text) FROM PUBLIC;
