//! Download statistics for an open cohort's organizers: every number exact
//! for known downloads (ranges, resumed sessions, archives, anonymous
//! visitors behind a trusted proxy, a signed-in user), anonymous visitors
//! known only by a keyed hash whose key is deleted once its day is over.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use custodian::auth::Role;
use custodian::jobs;
use custodian::release::downloaders;
use serde_json::{Value, json};

use crate::extracts::eventually;
use crate::helpers::{Served, TestApp, captured_logs};
use crate::open_cohorts::{CHALLENGE, published};

const STATISTICS: &str = "/api/v1/open-cohorts/demo-chest-xray-challenge/statistics";
/// Two anonymous visitors, as the proxy in front of the registry forwards them.
const VISITOR_A: &str = "203.0.113.77";
const VISITOR_B: &str = "2001:db8:5a7::9";

/// A client of the app served on a socket, its requests coming through a
/// proxy (this machine, trusted) that forwards `forwarded_for`.
struct Client<'a> {
    served: &'a Served,
    forwarded_for: &'a str,
    token: Option<&'a str>,
}

impl Client<'_> {
    /// `GET` with `headers`: the status and the body.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
        let mut request = reqwest::Client::new()
            .get(format!("http://{}{path}", self.served.host))
            .header("x-forwarded-for", self.forwarded_for);
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
    }
}

/// The published challenge served on a socket, with this machine as the trusted proxy.
async fn behind_a_proxy() -> (TestApp, String, String, Served) {
    let (mut app, olga, version) = published().await;
    let mut config = (*app.state.config).clone();
    config.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    app.state.config = Arc::new(config);
    app.router = custodian::app::build_router(app.state.clone());
    let served = app.serve().await;
    (app, olga, version["id"].as_str().unwrap().to_owned(), served)
}

async fn size(app: &TestApp, id: &str, path: &str) -> i64 {
    sqlx::query_scalar("select size from extract_file where extract_id = $1::uuid and path = $2")
        .bind(id)
        .bind(path)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Waits until the downloads' bytes are recorded (after each response body ends).
async fn recorded(app: &TestApp, requests: i64) {
    let total = || async {
        let n: i64 = sqlx::query_scalar("select coalesce(sum(requests), 0)::bigint from extract_download")
            .fetch_one(&app.db)
            .await
            .unwrap();
        n == requests
    };
    assert!(eventually(total).await, "{requests} requests recorded");
}

fn len(body: &[u8]) -> i64 {
    i64::try_from(body.len()).unwrap()
}

fn counts(downloads: i64, requests: i64, bytes: i64, registered: i64, anonymous: i64) -> Value {
    json!({"downloads": downloads, "requests": requests, "bytes": bytes,
           "registered_downloaders": registered, "anonymous_downloaders": anonymous})
}

fn split(name: &str, counts: Value) -> Value {
    let mut split = counts;
    split["split"] = json!(name);
    split
}

#[tokio::test]
async fn organizers_see_exact_downloads_per_version_and_split_with_anonymous_visitors_counted_per_day() {
    let (app, olga, id, served) = behind_a_proxy().await;
    let rita = app.token("rita", &[Role::Researcher]);
    let files = format!("/api/v1/extracts/{id}/files");
    let (train, test, readme) = ("train/tables/subjects.csv", "test/tables/subjects.csv", "README.md");
    let (train_size, test_size, readme_size) =
        (size(&app, &id, train).await, size(&app, &id, test).await, size(&app, &id, readme).await);

    // Visitor A takes the training table in two ranges of one session, and the README.
    let a = Client { served: &served, forwarded_for: VISITOR_A, token: None };
    let first = a.get(&format!("{files}/{train}"), &[("range", "bytes=0-9"), ("x-download-session", "a1")]).await;
    assert_eq!((first.0, first.1.len()), (206, 10));
    let rest = a.get(&format!("{files}/{train}"), &[("range", "bytes=10-"), ("x-download-session", "a1")]).await;
    assert_eq!((rest.0, len(&rest.1)), (206, train_size - 10));
    assert_eq!(a.get(&format!("{files}/{readme}"), &[]).await.0, 200);
    // Visitor B (whose header claims to come from 192.0.2.1: not believed, only what
    // the trusted proxy saw counts) takes ten bytes of the training table, then the
    // whole version as an archive.
    let chain = format!("192.0.2.1, {VISITOR_B}");
    let b = Client { served: &served, forwarded_for: &chain, token: None };
    let (status, _) = b.get(&format!("{files}/{train}"), &[("range", "bytes=0-9"), ("x-download-session", "b1")]).await;
    assert_eq!(status, 206);
    let (status, archive) = b.get(&format!("/api/v1/extracts/{id}/archive"), &[]).await;
    assert_eq!(status, 200);
    // Rita, signed in (what she forwards does not matter), takes the test folder as an archive and its table.
    let r = Client { served: &served, forwarded_for: VISITOR_A, token: Some(&rita) };
    let (status, test_archive) = r.get(&format!("/api/v1/extracts/{id}/archive?prefix=test/"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(r.get(&format!("{files}/{test}"), &[]).await.0, 200);
    recorded(&app, 7).await;
    // The README was read yesterday: the same visitor on another day is another anonymous downloader.
    sqlx::query("update extract_download set day = day - 1 where path = 'README.md'").execute(&app.db).await.unwrap();

    let statistics = app.get(STATISTICS, Some(&olga)).await.assert_status(StatusCode::OK).json();
    assert_eq!(statistics["slug"], "demo-chest-xray-challenge");
    let versions = statistics["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{statistics}");
    let version = &versions[0];
    assert_eq!((version["extract_id"].as_str(), version["version"].as_i64()), (Some(id.as_str()), Some(1)));
    let (archive, test_archive) = (len(&archive), len(&test_archive));
    assert_eq!(
        version["splits"],
        json!([
            split("train", counts(1, 3, train_size + 10, 0, 2)),
            split("validation", counts(0, 0, 0, 0, 0)),
            split("test", counts(2, 2, test_archive + test_size, 1, 0)),
            split("documents", counts(1, 1, readme_size, 0, 1)),
            split("archive", counts(1, 1, archive, 0, 1)),
        ]),
        "{version}"
    );
    let bytes = train_size + 10 + test_archive + test_size + readme_size + archive;
    assert_eq!(version["totals"], counts(5, 7, bytes, 1, 3), "A today, A yesterday, B today: {version}");

    // Thirty days for a chart, oldest first: yesterday's README, today's rest.
    let days = version["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(days[29], json!({"day": today, "downloads": 4, "requests": 6, "bytes": bytes - readme_size}));
    let yesterday = days[28]["day"].as_str().unwrap().to_owned();
    assert_eq!(days[28], json!({"day": yesterday, "downloads": 1, "requests": 1, "bytes": readme_size}));
    assert!(days[..28].iter().all(|d| d["downloads"] == 0 && d["bytes"] == 0), "{days:?}");
    assert!(days.windows(2).all(|w| w[0]["day"].as_str() < w[1]["day"].as_str()), "{days:?}");

    // Anonymous downloads are audited under the visitor's hash; Rita under her name.
    let actors: Vec<String> =
        sqlx::query_scalar("select distinct actor from audit_event where action like 'extract.download%' order by 1")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(actors.len(), 3, "{actors:?}");
    assert_eq!(actors[2], "rita");
    for actor in &actors[..2] {
        let hash = actor.strip_prefix("anonymous:").unwrap_or_else(|| panic!("{actor}"));
        assert!(hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{actor}");
    }

    // Nowhere is an address in clear: not in the downloads, the audit log, the response or the logs.
    let rows = app.rows_as_text(&["extract_download", "audit_event", "download_key", "job"]).await;
    let logs = String::from_utf8_lossy(&captured_logs()).into_owned();
    for address in [VISITOR_A, VISITOR_B, "192.0.2.1"] {
        assert!(!rows.contains(address), "{address} stored");
        assert!(!logs.contains(address), "{address} logged");
        assert!(!statistics.to_string().contains(address), "{address} returned");
    }
    served.stop().await;
}

#[tokio::test]
async fn only_organizers_and_admins_see_download_statistics_of_an_open_cohort() {
    let (app, olga, _) = published().await;
    let admin = app.token("alice", &[Role::Admin]);
    let statistics = app.get(STATISTICS, Some(&admin)).await.assert_status(StatusCode::OK).json();
    let version = &statistics["versions"][0];
    assert_eq!(version["totals"], counts(0, 0, 0, 0, 0), "nothing downloaded yet: {statistics}");
    assert_eq!(version["splits"].as_array().unwrap().len(), 5);
    // Anonymous without a socket (no address known) is still counted, as one visitor.
    let readme = format!("/api/v1/extracts/{}/files/README.md", version["extract_id"].as_str().unwrap());
    app.get(&readme, None).await.assert_status(StatusCode::OK);
    recorded(&app, 1).await;
    let statistics = app.get(STATISTICS, Some(&olga)).await.assert_status(StatusCode::OK).json();
    assert_eq!(statistics["versions"][0]["totals"]["anonymous_downloaders"], 1, "{statistics}");

    for role in [Role::Researcher, Role::Steward, Role::Uploader] {
        let token = app.token("someone", &[role]);
        app.get(STATISTICS, Some(&token)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    app.get(STATISTICS, None).await.assert_status(StatusCode::UNAUTHORIZED);
    app.get("/api/v1/open-cohorts/no-such-challenge/statistics", Some(&olga))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
    app.get("/api/v1/open-cohorts/demo-neuro-mri/statistics", Some(&olga))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
    assert!(app.get(CHALLENGE, None).await.status.is_success(), "the landing stays public");
}

#[tokio::test]
async fn a_past_days_download_key_is_deleted_by_the_recurring_job_and_todays_stays() {
    let app = TestApp::new().await;
    let visitor = Some(VISITOR_A.parse().unwrap());
    let today = downloaders::downloader(&app.db, None, visitor).await.unwrap();
    assert!(today.starts_with("anonymous:"), "{today}");
    assert_eq!(downloaders::downloader(&app.db, None, visitor).await.unwrap(), today, "one hash all day");
    sqlx::query("insert into download_key (day, key) values ((now() at time zone 'utc')::date - 1, $1)")
        .bind(vec![7u8; 32])
        .execute(&app.db)
        .await
        .unwrap();

    let lease = Duration::from_mins(1);
    let id = jobs::enqueue(&app.db, &downloaders::next_forget(Duration::ZERO)).await.unwrap().expect("queued");
    assert!(jobs::enqueue(&app.db, &downloaders::next_forget(Duration::ZERO)).await.unwrap().is_none(), "once");
    let job = jobs::claim(&app.db, "w", lease).await.unwrap().unwrap();
    assert_eq!(job.kind, downloaders::FORGET_JOB);
    jobs::run_claimed(&app.db, "w", lease, &job, downloaders::run_forget_job(&app.db)).await.unwrap();

    let days: Vec<bool> =
        sqlx::query_scalar("select day = (now() at time zone 'utc')::date from download_key order by day")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(days, [true], "yesterday's key is gone, today's stays");
    assert_eq!(downloaders::downloader(&app.db, None, visitor).await.unwrap(), today);
    let next: Vec<bool> = sqlx::query_scalar(
        "select run_at between date_trunc('day', now(), 'UTC') + interval '1 day'
                           and date_trunc('day', now(), 'UTC') + interval '1 day 2 minutes'
         from job where job_id <> $1 and kind = $2 and state = 'queued'",
    )
    .bind(id)
    .bind(downloaders::FORGET_JOB)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(next, [true], "the next run is queued just after the next UTC midnight");
}
