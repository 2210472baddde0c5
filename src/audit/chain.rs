//! The hash chain: canonical encoding of an event and the SHA-256 link.
//!
//! `hash = SHA-256(prev_hash || canonical_json(event))`, where the canonical JSON
//! has object keys sorted by their UTF-8 bytes, no insignificant whitespace, and
//! the time as RFC 3339 UTC with exactly six fractional digits (PostgreSQL's
//! precision), so the database's copy of an event hashes to the same value.

use aws_lc_rs::digest::{SHA256, digest};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// Length of a link of the chain.
pub const HASH_LEN: usize = 32;

/// The hash before the first event.
pub const GENESIS: [u8; HASH_LEN] = [0; HASH_LEN];

/// The parts of an event that its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct EventContent<'a> {
    pub seq: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub details: &'a Value,
}

/// Hash of `event` linked to `prev_hash`.
pub fn link(prev_hash: &[u8], event: &EventContent<'_>) -> [u8; HASH_LEN] {
    let body = json!({
        "seq": event.seq,
        "occurred_at": event.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "details": event.details,
    });
    let mut input = Vec::with_capacity(HASH_LEN + 256);
    input.extend_from_slice(prev_hash);
    write_canonical(&body, &mut input);
    let mut out = [0; HASH_LEN];
    out.copy_from_slice(digest(&SHA256, &input).as_ref());
    out
}

/// Appends the canonical JSON encoding of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // serde_json writes scalars without whitespace and with minimal escaping.
    serde_json::to_writer(out, value).expect("writing JSON to a Vec cannot fail");
}

/// Truncates a time to the microsecond precision the database keeps.
pub fn to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).expect("a current time is representable")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(value: &Value) -> String {
        let mut out = Vec::new();
        write_canonical(value, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_drops_whitespace() {
        let value: Value =
            serde_json::from_str(r#"{ "b": 1, "a": { "z": [1, {"y": 2, "x": "é"}], "c": null } }"#).unwrap();
        assert_eq!(canonical(&value), r#"{"a":{"c":null,"z":[1,{"x":"é","y":2}]},"b":1}"#);
    }

    #[test]
    fn link_depends_on_every_field_and_the_previous_hash() {
        let details = json!({"k": "v"});
        let base = EventContent {
            seq: 1,
            occurred_at: to_micros(Utc::now()),
            actor: "alice",
            action: "token.create",
            target: Some("token:1"),
            details: &details,
        };
        let h = link(&GENESIS, &base);
        assert_eq!(h, link(&GENESIS, &base), "deterministic");
        let other_details = json!({"k": "w"});
        let variants = [
            EventContent { seq: 2, ..base },
            EventContent { actor: "bob", ..base },
            EventContent { action: "token.revoke", ..base },
            EventContent { target: None, ..base },
            EventContent { details: &other_details, ..base },
            EventContent { occurred_at: base.occurred_at + chrono::Duration::microseconds(1), ..base },
        ];
        for variant in variants {
            assert_ne!(h, link(&GENESIS, &variant), "{variant:?}");
        }
        assert_ne!(h, link(&[1; HASH_LEN], &base));
    }
}
