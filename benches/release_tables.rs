//! What writing a release's tables costs: a long observations table (subject,
//! field, value, code, unit, time) encoded as CSV and as Parquet
//! (`src/release/tables.rs`), with the sizes of both.
//!
//! ```text
//! cargo bench --bench release_tables
//! ```
//!
//! Prints one line per size: `rows csv_ms csv_MB parquet_ms parquet_MB rows_per_s(parquet)`.

use std::time::Instant;

use chrono::{NaiveDate, TimeDelta};
use custodian::release::tables::{Column, Table, Values, to_csv, to_parquet};

const FIELDS: [(&str, &str); 5] =
    [("glucose", "mmol/L"), ("hba1c", "%"), ("creatinine", "umol/L"), ("bmi", "kg/m2"), ("prot_il6", "{NPX}")];

fn observations(rows: usize) -> Table {
    let start = NaiveDate::from_ymd_opt(2010, 1, 1).unwrap().and_hms_opt(8, 0, 0).unwrap();
    let column = |name, values| Column { name, description: "", required: false, values };
    let field = |i: usize| FIELDS[i % FIELDS.len()];
    Table {
        name: "observations",
        columns: vec![
            column("subject", Values::Text((0..rows).map(|i| Some(format!("psub-{:016x}", i / 100))).collect())),
            column("field", Values::Text((0..rows).map(|i| Some(field(i).0.to_owned())).collect())),
            #[allow(clippy::cast_precision_loss)]
            column("value", Values::Number((0..rows).map(|i| Some((i % 997) as f64 * 0.013 + 1.0)).collect())),
            column("value_code", Values::Text(vec![None; rows])),
            column("unit", Values::Text((0..rows).map(|i| Some(field(i).1.to_owned())).collect())),
            column(
                "observed_at",
                Values::Timestamp(
                    (0..rows).map(|i| Some(start + TimeDelta::minutes(i64::try_from(i).unwrap() * 37))).collect(),
                ),
            ),
        ],
    }
}

fn main() {
    println!("rows csv_ms csv_MB parquet_ms parquet_MB rows_per_s");
    for rows in [100_000, 1_000_000] {
        let table = observations(rows);
        let started = Instant::now();
        let csv = to_csv(&table).unwrap();
        let csv_time = started.elapsed();
        let started = Instant::now();
        let parquet = to_parquet(&table).unwrap();
        let parquet_time = started.elapsed();
        #[allow(clippy::cast_precision_loss)]
        let mb = |bytes: usize| bytes as f64 / 1e6;
        #[allow(clippy::cast_precision_loss)]
        let rate = rows as f64 / parquet_time.as_secs_f64();
        println!(
            "{rows} {} {:.1} {} {:.1} {rate:.0}",
            csv_time.as_millis(),
            mb(csv.len()),
            parquet_time.as_millis(),
            mb(parquet.len())
        );
    }
}
