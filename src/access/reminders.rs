//! Duties coming due: the PI of the project is reminded of each unfulfilled
//! duty 30 days before its due date, 7 days before, and once it is overdue.
//! Each stage reminds once, by notification (and so by e-mail), and is
//! audited, so a steward who later suspends a grant can show the reminders.

use std::time::Duration;

use chrono::NaiveDate;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::audit::{self, NewEvent};
use crate::error::ApiError;
use crate::jobs::NewJob;

/// The daily job that sends the reminders.
pub const REMIND_JOB: &str = "duties.remind";

/// The stage a duty due in `days_left` days is at: 30 or 7 days before, or
/// overdue (0); none while further away.
pub fn stage(days_left: i32) -> Option<i32> {
    match days_left {
        ..0 => Some(0),
        0..=7 => Some(7),
        8..=30 => Some(30),
        _ => None,
    }
}

fn subject(kind: &str, title: &str, due_on: NaiveDate, stage: i32) -> String {
    let duty = kind.replace('_', " ");
    if stage == 0 {
        format!("The {duty} of the project “{title}” was due on {due_on} and is overdue")
    } else {
        format!("The {duty} of the project “{title}” is due on {due_on}, within {stage} days")
    }
}

/// Reminds the PIs of every duty that reached a stage not yet reminded;
/// returns how many reminders went out.
pub async fn remind(db: &PgPool) -> Result<usize, ApiError> {
    let mut tx = db.begin().await?;
    let due = sqlx::query!(
        r#"select o.obligation_id, o.grant_id, o.project_id, o.kind, o.due_on, o.reminded_within,
                  (o.due_on - current_date) as "days_left!", p.pi_username, p.title
           from obligation o join project p on p.project_id = o.project_id
           where o.fulfilled_at is null and o.due_on - current_date <= 30
             and (o.reminded_within is null or o.reminded_within > 0)
           order by o.due_on, o.obligation_id
           for update of o skip locked"#
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut sent = 0;
    for row in due {
        let Some(stage) = stage(row.days_left) else { continue };
        if row.reminded_within.is_some_and(|done| done <= stage) {
            continue;
        }
        super::duties::notify(
            &mut tx,
            &row.pi_username,
            "duty.due",
            &subject(&row.kind, &row.title, row.due_on, stage),
            &format!("grant:{}", row.grant_id),
        )
        .await?;
        sqlx::query!("update obligation set reminded_within = $2 where obligation_id = $1", row.obligation_id, stage)
            .execute(&mut *tx)
            .await?;
        audit::record(
            &mut tx,
            NewEvent::new("system:duties", "obligation.reminded")
                .target(format!("project:{}", row.project_id))
                .details(json!({ "obligation": row.obligation_id, "grant": row.grant_id, "kind": row.kind,
                        "due_on": row.due_on, "stage_days": stage, "to": row.pi_username })),
        )
        .await?;
        sent += 1;
    }
    tx.commit().await?;
    Ok(sent)
}

/// The next run of the reminder job, `after` from now; never more than one pending.
pub fn next_remind(after: Duration) -> NewJob {
    NewJob::new(REMIND_JOB).dedupe(REMIND_JOB).after(after)
}

/// The reminder job: sends what is due, then names its next run, a minute
/// into the next UTC day.
pub async fn run_job(db: &PgPool) -> anyhow::Result<Option<NewJob>> {
    let sent = remind(db).await?;
    tracing::info!(sent, "reminders of duties coming due sent");
    Ok(Some(next_remind(crate::jobs::until_next_utc_day(db).await?)))
}

/// The obligation ids reminded at `stage` days (for tests and reports).
pub async fn reminded(db: &PgPool, stage_days: i32) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!("select obligation_id from obligation where reminded_within = $1", stage_days)
        .fetch_all(db)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duty_is_reminded_a_month_before_a_week_before_and_when_overdue() {
        assert_eq!(stage(45), None);
        assert_eq!(stage(31), None);
        assert_eq!(stage(30), Some(30));
        assert_eq!(stage(8), Some(30));
        assert_eq!(stage(7), Some(7));
        assert_eq!(stage(0), Some(7), "due today is not yet overdue");
        assert_eq!(stage(-1), Some(0));
    }

    #[test]
    fn the_subject_names_the_duty_the_project_and_the_date() {
        let due = NaiveDate::from_ymd_opt(2027, 3, 1).unwrap();
        assert_eq!(
            subject("progress_report", "Knee OA", due, 7),
            "The progress report of the project “Knee OA” is due on 2027-03-01, within 7 days"
        );
        assert!(subject("deletion_attestation", "Knee OA", due, 0).contains("is overdue"));
    }
}
