//! Alerts (`pulse.alert`, readable by each job's owner) to a NOTIFY channel and/or a webhook,
//! when an incident starts or ends and when a job is overdue; and their retention.

use crate::health::{notify_payload, valid_channel};
use crate::pgutil::from_pg_ts;
use crate::xact;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

pub(crate) fn alert_target_default() -> Option<String> {
    crate::ALERT_TARGET
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|s| !s.trim().is_empty())
}

pub struct Alert<'a> {
    pub event: &'a str,
    pub job_name: &'a str,
    pub job_id: i64,
    pub owner: Option<pg_sys::Oid>,
    pub run_id: Option<i64>,
    pub status: Option<&'a str>,
    pub message: Option<&'a str>,
    pub consecutive_failures: i32,
    pub runs_24h: i64,
    pub failures_24h: i64,
}

/// Sends an alert to a target (`{"notify": "channel", "webhook": request}`), at commit of the
/// current transaction. The alert is a row in `pulse.alert` (readable by the job's owner only);
/// its NOTIFY payload is just `{"alert_id": N}`, because any role may LISTEN on any channel (and
/// pg_notify on it): the details are read from `pulse.alerts`, and an id not found there was not
/// sent by pg_pulse. A webhook goes to the owner's own endpoint and carries the text.
/// Problems are reported in the server log, never raised (the run's outcome must be kept).
pub fn send_alert(c: &mut SpiClient<'_>, target: &str, a: &Alert) {
    let t = match serde_json::from_str::<serde_json::Value>(target) {
        Ok(t) => t,
        Err(e) => {
            warning!(
                "pg_pulse: could not send an alert for job \"{}\": invalid alert target {target}: {e}",
                a.job_name
            );
            return;
        }
    };
    let channel = match t.get("notify") {
        None => None,
        Some(serde_json::Value::String(ch)) if valid_channel(ch) => Some(ch.as_str()),
        Some(other) => {
            warning!(
                "pg_pulse: could not send an alert for job \"{}\": \"notify\" must be a channel name, not {other}",
                a.job_name
            );
            None
        }
    };
    let webhook = t.get("webhook").cloned();
    if channel.is_none() && webhook.is_none() {
        return; // '{}': alerts silenced
    }
    if let Some(id) = record_alert(c, a, channel) {
        if let Some(ch) = channel {
            let r = c.update(
                "SELECT pg_catalog.pg_notify($1, $2)",
                None,
                &[ch.into(), notify_payload(id).into()],
            );
            if let Err(e) = r {
                warning!(
                    "pg_pulse: could not notify alert {id} for job \"{}\": {e}",
                    a.job_name
                );
            }
        }
    }
    if let Some(w) = webhook {
        send_webhook(c, w, a);
    }
}

/// Does the alert table exist? (The library may be newer than the extension's SQL.)
pub(crate) fn alert_table_present(c: &mut SpiClient<'_>) -> bool {
    c.select(
        "SELECT pg_catalog.to_regclass('pulse.alert') IS NOT NULL",
        Some(1),
        &[],
    )
    .ok()
    .and_then(|t| t.first().get_one::<bool>().ok().flatten())
    .unwrap_or(false)
}

/// Writes the alert's row in `pulse.alert` (in the current transaction); returns its id.
/// `None` (and a warning) when the table is missing: the extension's SQL is older than this
/// library (run ALTER EXTENSION pg_pulse UPDATE); nothing is notified then, since the details
/// would have nowhere private to go.
fn record_alert(c: &mut SpiClient<'_>, a: &Alert, channel: Option<&str>) -> Option<i64> {
    let owner = a.owner?;
    let present = alert_table_present(c);
    if !present {
        warning!(
            "pg_pulse: alert \"{}\" for job \"{}\" not sent: table pulse.alert is missing (run ALTER EXTENSION pg_pulse UPDATE)",
            a.event,
            a.job_name
        );
        return None;
    }
    let r = c.update(
        "INSERT INTO pulse.alert (job_id, job_name, owner, event, run_id, status, message,
                                  consecutive_failures, runs_24h, failures_24h, channel, database)
         VALUES ($1, $2, $3, $4, $5, $6, left($7, 2000), $8, $9, $10, $11,
                 (SELECT j.database FROM pulse.job j WHERE j.job_id = $1))
         RETURNING alert_id",
        Some(1),
        &[
            a.job_id.into(),
            a.job_name.into(),
            owner.into(),
            a.event.into(),
            a.run_id.into(),
            a.status.into(),
            a.message.into(),
            a.consecutive_failures.into(),
            a.runs_24h.into(),
            a.failures_24h.into(),
            channel.into(),
        ],
    );
    match r.map(|t| t.first().get_one::<i64>()) {
        Ok(Ok(Some(id))) => Some(id),
        Ok(Ok(None)) => None,
        Ok(Err(e)) | Err(e) => {
            warning!(
                "pg_pulse: could not record an alert for job \"{}\": {e}",
                a.job_name
            );
            None
        }
    }
}

/// The text of an alert, for people (Slack's `text`).
pub fn alert_text(a: &Alert) -> String {
    let what = match a.event {
        "incident" => format!(
            ":rotating_light: pg_pulse job \"{}\" is failing ({} consecutive failures, {} of {} runs failed in 24 h)",
            a.job_name, a.consecutive_failures, a.failures_24h, a.runs_24h
        ),
        "recovered" => format!(":white_check_mark: pg_pulse job \"{}\" recovered", a.job_name),
        "overdue" => format!(":warning: pg_pulse job \"{}\" is overdue", a.job_name),
        other => format!("pg_pulse job \"{}\": {other}", a.job_name),
    };
    match (a.status, a.message) {
        (Some(st), Some(m)) => format!(
            "{what}. Last run {st}: {}",
            m.chars().take(500).collect::<String>()
        ),
        (None, Some(m)) => format!("{what}: {m}"),
        _ => what,
    }
}

/// A webhook alert: the target's request (built with pulse.http_request) goes out after commit
/// through pulse.http_request, as the job's owner (its secrets), with up to 3 attempts. Without a
/// body it sends Slack-compatible JSON: {"text": "..."}. That text is data (the job's name, the
/// run's error): it is sent as it is, never expanded, whatever the target says; placeholders in
/// the target's URL and headers (and in a body of its own marked `body_template`) are its
/// author's and are filled in.
fn send_webhook(c: &mut SpiClient<'_>, mut request: serde_json::Value, a: &Alert) {
    if let Some(o) = request.as_object_mut() {
        let empty = |k: &str| o.get(k).is_none_or(|v| v.is_null());
        if empty("body") && empty("body_text") {
            o.insert("body".into(), serde_json::json!({ "text": alert_text(a) }));
            o.remove("body_template");
        }
    }
    let Some(owner) = a.owner else { return };
    let r = c.update(
        "INSERT INTO pulse.http_request (owner, request, max_attempts, origin)
         VALUES ($1, $2::jsonb, 3, 'alert')",
        None,
        &[owner.into(), request.to_string().into()],
    );
    match r {
        Ok(_) => crate::worker::wake_http_at_commit(),
        Err(e) => warning!(
            "pg_pulse: could not queue the webhook alert for job \"{}\": {e}",
            a.job_name
        ),
    }
}

/// Scheduler: alert once per job whose due slot passed more than pulse.overdue_after ago without
/// a run starting (the scheduler was down, or no executor was free). Returns how many.
pub fn alert_overdue() -> i64 {
    let overdue = crate::OVERDUE_AFTER.get() as i64;
    let rows: Vec<(
        i64,
        String,
        Option<pg_sys::Oid>,
        Option<String>,
        Option<TimestampWithTimeZone>,
    )> = Spi::connect(|c| {
        c.select(
            "WITH queued AS (
               SELECT job_id, min(scheduled_for) AS slot FROM pulse.job_run
                WHERE status = 'queued' GROUP BY job_id),
             late AS (
               SELECT j.job_id, j.job_name, j.owner::oid AS owner, coalesce(j.alert::text, $2) AS target,
                      least(CASE WHEN j.enabled THEN j.next_run_at END, q.slot) AS slot
                 FROM pulse.job j LEFT JOIN queued q ON q.job_id = j.job_id)
             SELECT l.job_id, l.job_name, l.owner, l.target, l.slot FROM late l
               LEFT JOIN pulse.job_stats s ON s.job_id = l.job_id
              WHERE l.slot < now() - $1 * interval '1 second'
                AND NOT coalesce(s.overdue_alerted, false)",
            None,
            &[overdue.into(), alert_target_default().into()],
        )
        .map(|t| {
            t.map(|r| {
                (
                    r.get::<i64>(1).ok().flatten().unwrap_or(0),
                    r.get::<String>(2).ok().flatten().unwrap_or_default(),
                    r.get::<pg_sys::Oid>(3).ok().flatten(),
                    r.get::<String>(4).ok().flatten(),
                    r.get::<TimestampWithTimeZone>(5).ok().flatten(),
                )
            })
            .collect()
        })
        .unwrap_or_default()
    });
    let mut alerted = 0;
    for (job_id, name, owner, target, slot) in rows {
        // each job in a subtransaction of its own, taking its statistics row without waiting:
        // a job someone is changing in an open transaction is looked at next time, and never
        // holds up the other jobs' alerts (or the worker)
        let one = std::panic::AssertUnwindSafe((job_id, name, owner, target, slot));
        let sent = xact::in_subxact(move || {
            let (job_id, name, owner, target, slot) = &*one;
            Spi::connect_mut(|c| {
                if !mark_overdue(c, *job_id, *owner) {
                    return false;
                }
                log!(
                    "pg_pulse: job \"{name}\" is overdue: its slot at {} has not run",
                    slot.map(|s| from_pg_ts(s).to_rfc3339()).unwrap_or_default()
                );
                if let Some(target) = target {
                    let msg = slot.map(|s| {
                        format!(
                            "the slot at {} has not run: the scheduler was down or no executor was free",
                            from_pg_ts(s).to_rfc3339()
                        )
                    });
                    send_alert(
                        c,
                        target,
                        &Alert {
                            event: "overdue",
                            job_name: name,
                            job_id: *job_id,
                            owner: *owner,
                            run_id: None,
                            status: None,
                            message: msg.as_deref(),
                            consecutive_failures: 0,
                            runs_24h: 0,
                            failures_24h: 0,
                        },
                    );
                }
                true
            })
        });
        if sent == Some(true) {
            alerted += 1;
        }
    }
    alerted
}

/// Marks job `job_id` as alerted for being overdue, if nobody did yet and its statistics row is
/// free: whether this call did. Never waits for a lock (SKIP LOCKED; a row that does not exist
/// yet is created, which waits for nobody since no one else holds it).
fn mark_overdue(c: &mut SpiClient<'_>, job_id: i64, owner: Option<pg_sys::Oid>) -> bool {
    let marked = c
        .update(
            "UPDATE pulse.job_stats SET overdue_alerted = true
              WHERE job_id = (SELECT s.job_id FROM pulse.job_stats s
                               WHERE s.job_id = $1 AND NOT s.overdue_alerted
                                 FOR UPDATE SKIP LOCKED)
          RETURNING 1",
            None,
            &[job_id.into()],
        )
        .map(|t| t.len() > 0)
        .unwrap_or(false);
    if marked {
        return true;
    }
    let exists = c
        .select(
            "SELECT EXISTS (SELECT 1 FROM pulse.job_stats WHERE job_id = $1)",
            None,
            &[job_id.into()],
        )
        .ok()
        .and_then(|t| t.first().get_one::<bool>().ok().flatten())
        .unwrap_or(true);
    if exists {
        return false; // alerted already, or being changed: next time
    }
    c.update(
        "INSERT INTO pulse.job_stats (job_id, owner, overdue_alerted) VALUES ($1, $2, true)
         ON CONFLICT (job_id) DO NOTHING RETURNING 1",
        None,
        &[job_id.into(), owner.into()],
    )
    .map(|t| t.len() > 0)
    .unwrap_or(false)
}

/// Deletes up to `batch` alerts older than pulse.run_retention_failed (alerts are about
/// failures); returns how many.
pub fn prune_alerts(c: &mut SpiClient<'_>, batch: i64) -> i64 {
    let keep_failed = crate::RUN_RETENTION_FAILED.get() as i64;
    // (the library may be newer than the extension's SQL: no table yet, nothing to prune)
    if !alert_table_present(c) {
        return 0;
    }
    xact::with_plan(
        c,
        "DELETE FROM pulse.alert WHERE alert_id IN (
           SELECT alert_id FROM pulse.alert
            WHERE created_at < now() - $1 * interval '1 second'
            LIMIT $2)",
        &[
            PgOid::BuiltIn(PgBuiltInOids::INT8OID),
            PgOid::BuiltIn(PgBuiltInOids::INT8OID),
        ],
        |c, stmt| {
            c.select(stmt, None, &[keep_failed.into(), batch.into()])
                .map(|t| t.len() as i64)
                .unwrap_or(0)
        },
    )
    .unwrap_or(0)
}
