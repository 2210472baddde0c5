//! Discovery benchmark driver (run by `benches/discovery.sh`).
//!
//! ```text
//! discovery_load api <base-url> <token> <queries.json> <runs>   # TSV: name, kind, latencies (ms)
//! discovery_load sql <queries.json> <runs>                       # a psql script with \timing
//! discovery_load report <api.tsv> <psql.out> <queries.json>      # the comparison table
//! discovery_load compare <exact.tsv> <protected.tsv>             # protected against exact, same queries
//! discovery_load labs <csv> <patients> <rows-per-patient>        # a lab export for the import benchmark
//! ```
//!
//! Each query runs 2 warm-up times, then `runs` times one after another; the
//! same queries written by hand in SQL run the same number of times in one
//! psql session, timed by psql itself.

// Timings and percentiles of small counts.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Instant;

use serde_json::Value;

const WARM_UP: usize = 2;

fn queries(path: &str) -> Vec<Value> {
    serde_json::from_slice::<Vec<Value>>(&std::fs::read(path).expect("queries file")).expect("a JSON array of queries")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn api(base: &str, token: &str, path: &str, runs: usize) {
    let client = reqwest::Client::new();
    for q in queries(path) {
        let kind = q["kind"].as_str().expect("kind");
        let url = format!("{base}/api/v1/discovery/{kind}");
        let mut times = Vec::new();
        for i in 0..WARM_UP + runs {
            let started = Instant::now();
            let response = client.post(&url).bearer_auth(token).json(&q["body"]).send().await.expect("request");
            let status = response.status();
            let body = response.text().await.expect("body");
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            assert!(status.is_success(), "{}: {status} {body}", q["name"]);
            if i >= WARM_UP {
                times.push(format!("{ms:.3}"));
            }
        }
        println!("{}\t{kind}\t{}", q["name"].as_str().expect("name"), times.join(","));
    }
}

fn sql(path: &str, runs: usize) {
    let mut script = String::from("\\timing on\n\\o /dev/null\n");
    for (i, q) in queries(path).iter().enumerate() {
        let _ = writeln!(script, "\\echo Q{i}");
        for _ in 0..WARM_UP + runs {
            let _ = writeln!(script, "{};", q["sql"].as_str().expect("sql"));
        }
    }
    print!("{script}");
}

struct Stats {
    p50: f64,
    p95: f64,
    p99: f64,
}

fn stats(mut times: Vec<f64>) -> Stats {
    times.sort_by(f64::total_cmp);
    Stats { p50: percentile(&times, 50.0), p95: percentile(&times, 95.0), p99: percentile(&times, 99.0) }
}

/// Name, kind and latencies of each query, as `api` wrote them.
fn api_results(path: &str) -> Vec<(String, String, Vec<f64>)> {
    std::fs::read_to_string(path)
        .expect("api results")
        .lines()
        .map(|line| {
            let mut parts = line.split('\t');
            let name = parts.next().expect("name").to_owned();
            let kind = parts.next().expect("kind").to_owned();
            let times = parts.next().expect("times").split(',').map(|t| t.parse().expect("ms")).collect();
            (name, kind, times)
        })
        .collect()
}

/// The same queries asked by a steward (exact) and a researcher (protected), side by side.
fn compare(exact_path: &str, protected_path: &str) {
    println!(
        "| query | kind | exact p50 | exact p95 | protected p50 | protected p95 | protected ÷ exact, p50 | protected ÷ exact, p95 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    for ((name, kind, exact), (_, _, protected)) in api_results(exact_path).into_iter().zip(api_results(protected_path))
    {
        let (e, p) = (stats(exact), stats(protected));
        ratios.push(p.p95 / e.p95);
        println!(
            "| {name} | {kind} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} × | {:.2} × |",
            e.p50,
            e.p95,
            p.p50,
            p.p95,
            p.p50 / e.p50,
            p.p95 / e.p95
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!();
    println!(
        "protected ÷ exact at p95: median {:.2} ×, worst {:.2} ×",
        percentile(&ratios, 50.0),
        ratios.last().copied().unwrap_or(f64::NAN)
    );
}

fn report(api_path: &str, psql_path: &str, path: &str) {
    let api = api_results(api_path);
    let mut sql: Vec<Vec<f64>> = Vec::new();
    for line in std::fs::read_to_string(psql_path).expect("psql output").lines() {
        if line.starts_with('Q') {
            sql.push(Vec::new());
        } else if let Some(ms) = line.strip_prefix("Time: ").and_then(|t| t.split(' ').next()) {
            sql.last_mut().expect("a query marker first").push(ms.parse().expect("ms"));
        }
    }
    let names = queries(path);
    assert_eq!(names.len(), api.len());
    assert_eq!(names.len(), sql.len());
    println!(
        "| query | kind | API p50 | API p95 | API p99 | SQL p50 | SQL p95 | SQL p99 | API ÷ SQL, p50 | API ÷ SQL, p95 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut worst = [("count", 0.0_f64), ("breakdown", 0.0)];
    let mut ratios = Vec::new();
    for ((name, kind, api_times), sql_times) in api.into_iter().zip(sql) {
        let sql_times: Vec<f64> = sql_times.into_iter().skip(WARM_UP).collect();
        let (a, s) = (stats(api_times), stats(sql_times));
        let (r50, r95) = (a.p50 / s.p50, a.p95 / s.p95);
        ratios.push(r95);
        for w in &mut worst {
            if w.0 == kind {
                w.1 = w.1.max(a.p95);
            }
        }
        println!(
            "| {name} | {kind} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {r50:.2} × | {r95:.2} × |",
            a.p50, a.p95, a.p99, s.p50, s.p95, s.p99
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!();
    println!(
        "worst API p95: counts {:.1} ms, breakdowns {:.1} ms; API ÷ SQL at p95: median {:.2} ×, worst {:.2} ×",
        worst[0].1,
        worst[1].1,
        percentile(&ratios, 50.0),
        ratios.last().copied().unwrap_or(f64::NAN)
    );
}

/// A lab export: `patients` new patients with `rows` values each, over ten fields and units.
fn labs(path: &str, patients: usize, rows: usize) {
    const FIELDS: &[(&str, &str, f64)] = &[
        ("2345-7", "mg/dL", 95.0),
        ("4548-4", "%", 5.6),
        ("2160-0", "umol/L", 80.0),
        ("62238-1", "mL/min/{1.73_m2}", 88.0),
        ("2093-3", "mmol/L", 5.1),
        ("2089-1", "mg/dL", 120.0),
        ("2085-9", "mmol/L", 1.4),
        ("2571-8", "mmol/L", 1.5),
        ("1988-5", "mg/L", 3.0),
        ("718-7", "g/dL", 13.8),
    ];
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("labs file"));
    writeln!(out, "patient_id,code,system,value,unit,time").expect("write");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for p in 0..patients {
        for r in 0..rows {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (code, unit, mean) = FIELDS[r % FIELDS.len()];
            let value = mean * (0.8 + (x % 400) as f64 / 1000.0);
            let day = 1 + (x >> 20) % 28;
            writeln!(out, "LAB{p:07},{code},LOINC,{value:.2},{unit},2021-03-{day:02}T08:{:02}:00", r % 60)
                .expect("write");
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let arg = |i: usize| args.get(i).map(String::as_str).expect("missing argument; see the module documentation");
    match arg(0) {
        "api" => api(arg(1), arg(2), arg(3), arg(4).parse().expect("runs")).await,
        "sql" => sql(arg(1), arg(2).parse().expect("runs")),
        "report" => report(arg(1), arg(2), arg(3)),
        "compare" => compare(arg(1), arg(2)),
        "labs" => labs(arg(1), arg(2).parse().expect("patients"), arg(3).parse().expect("rows")),
        other => panic!("unknown command {other}"),
    }
}
