//! Keyed, layered pseudonyms (DESIGN principle 2) and per-subject date shifts (principle 3).
//!
//! Every value is an HMAC-SHA-256 under the registry key, with a domain label
//! so a subject pseudonym can never equal a UID or a shift of the same input:
//! - subject: HMAC(key, "subject" ‖ site ‖ local patient ID), as `sub-` + 16 base32 characters;
//! - UID: HMAC(key, "uid" ‖ original UID), as `2.25.<decimal>` of a version-8 (custom) UUID,
//!   so the same original UID maps to the same new UID in every file, study and session;
//! - date shift: HMAC(key, "date-shift" ‖ subject pseudonym), a whole number of days back.
//!
//! Without the key none of these can be recomputed from a guessed MRN, unlike
//! unkeyed hashes. Fields are length-prefixed so ("ab","c") ≠ ("a","bc").

use aws_lc_rs::hmac;

/// The registry's secret pseudonymization key.
#[derive(Clone)]
pub struct RegistryKey(hmac::Key);

impl std::fmt::Debug for RegistryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryKey(..)")
    }
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `prefix` and the first 80 bits of `mac` in 16 base32 characters:
/// collisions are out of reach for any registry.
fn base32_pseudonym(prefix: &str, mac: &[u8]) -> String {
    let mut bits: u128 = 0;
    for byte in &mac[..10] {
        bits = (bits << 8) | u128::from(*byte);
    }
    let mut text = String::with_capacity(prefix.len() + 16);
    text.push_str(prefix);
    for i in (0..16).rev() {
        text.push(BASE32[((bits >> (i * 5)) & 31) as usize] as char);
    }
    text
}

/// A project's own pseudonym of a subject: HMAC of the registry pseudonym
/// under the project's key, so two projects cannot join their data, and
/// destroying the key destroys the link.
pub fn project_subject(project_key: &[u8; 32], registry_pseudonym: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, project_key);
    let tag = hmac::sign(&key, registry_pseudonym.as_bytes());
    base32_pseudonym("psub-", tag.as_ref())
}

impl RegistryKey {
    /// A key from at least 32 secret bytes.
    pub fn new(secret: &[u8]) -> Result<Self, &'static str> {
        if secret.len() < 32 {
            return Err("the registry key must be at least 32 bytes");
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    fn mac(&self, domain: &str, fields: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        for part in std::iter::once(domain.as_bytes()).chain(fields.iter().copied()) {
            ctx.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// A 256-bit key for `purpose` (e.g. sealing project keys), derived from the
    /// registry key and never stored.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        self.mac("derived-key", &[purpose.as_bytes()])
    }

    /// The registry pseudonym of the patient `local_id` at `site`.
    pub fn subject(&self, site: &str, local_id: &str) -> String {
        self.subject_issued(site, local_id, None)
    }

    /// The registry pseudonym of the patient `local_id` of `issuer` (Issuer of
    /// Patient ID) at `site`. An absent or empty issuer gives the pseudonym of
    /// [`Self::subject`], so registries built before issuers counted keep their subjects.
    pub fn subject_issued(&self, site: &str, local_id: &str, issuer: Option<&str>) -> String {
        let (site, id) = (site.as_bytes(), local_id.trim().as_bytes());
        let mac = match issuer.map(str::trim).filter(|i| !i.is_empty()) {
            Some(issuer) => self.mac("subject", &[site, id, issuer.as_bytes()]),
            None => self.mac("subject", &[site, id]),
        };
        base32_pseudonym("sub-", &mac)
    }

    /// The pseudonym of the unidentified patient of one study (no Patient ID):
    /// keyed on site and Study Instance UID, under a label of its own.
    pub fn unidentified_subject(&self, site: &str, study_uid: &str) -> String {
        let mac =
            self.mac("unidentified-subject", &[site.as_bytes(), study_uid.trim_end_matches(['\0', ' ']).as_bytes()]);
        base32_pseudonym("sub-", &mac)
    }

    /// The registry UID replacing `original`.
    pub fn uid(&self, original: &str) -> String {
        let mac = self.mac("uid", &[original.trim_end_matches(['\0', ' ']).as_bytes()]);
        let mut bytes = [0_u8; 16];
        bytes.copy_from_slice(&mac[..16]);
        // RFC 9562 version 8 (custom) and variant bits, so the value is a valid UUID.
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        format!("2.25.{}", u128::from_be_bytes(bytes))
    }

    /// Days every date of `subject` moves back: 1 to `max_days`.
    pub fn date_shift_days(&self, subject: &str, max_days: u32) -> i64 {
        let mac = self.mac("date-shift", &[subject.as_bytes()]);
        let n = u64::from_be_bytes(mac[..8].try_into().expect("8 bytes"));
        -i64::try_from(n % u64::from(max_days.max(1)) + 1).expect("fits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RegistryKey {
        RegistryKey::new(&[7; 32]).unwrap()
    }

    #[test]
    fn subject_pseudonyms_are_stable_keyed_and_site_scoped() {
        let k = key();
        let a = k.subject("uhb", "MRN123");
        assert_eq!(a, k.subject("uhb", "MRN123"));
        assert_eq!(a, k.subject("uhb", " MRN123 "), "padding does not split a patient");
        assert_ne!(a, k.subject("cmc", "MRN123"), "the same MRN at another site is another person");
        assert_ne!(a, RegistryKey::new(&[8; 32]).unwrap().subject("uhb", "MRN123"), "another key, another pseudonym");
        assert!(a.starts_with("sub-") && a.len() == 20, "{a}");
        assert_ne!(k.subject("uhbM", "RN123"), a, "fields cannot slide into each other");
        assert_eq!(k.subject_issued("uhb", "MRN123", None), a, "no issuer: the pseudonym of before");
        assert_eq!(k.subject_issued("uhb", "MRN123", Some(" ")), a, "an empty issuer is none");
        let issued = k.subject_issued("uhb", "MRN123", Some("HOSP-A"));
        assert_ne!(issued, a);
        assert_ne!(issued, k.subject_issued("uhb", "MRN123", Some("HOSP-B")), "two issuers, two patients");
        assert_ne!(k.unidentified_subject("uhb", "1.2.3"), k.unidentified_subject("uhb", "1.2.4"));
        assert_ne!(k.unidentified_subject("uhb", "MRN123"), a, "its own label");
    }

    #[test]
    fn uids_are_valid_2_25_uids_and_remapped_consistently() {
        let k = key();
        let uid = k.uid("1.2.840.113619.2.55.3.604688119.969.1268071029.320");
        assert_eq!(uid, k.uid("1.2.840.113619.2.55.3.604688119.969.1268071029.320\0"));
        assert!(uid.starts_with("2.25.") && uid.len() <= 64, "{uid}");
        assert!(uid[5..].bytes().all(|b| b.is_ascii_digit()) && !uid[5..].starts_with('0'));
        let n: u128 = uid[5..].parse().unwrap();
        assert_eq!((n >> 76) & 0xf, 8, "UUID version 8");
        assert_ne!(uid, k.uid("1.2.3"));
    }

    #[test]
    fn date_shift_is_one_per_subject_and_within_range() {
        let k = key();
        let s = k.subject("uhb", "MRN1");
        let shift = k.date_shift_days(&s, 3650);
        assert_eq!(shift, k.date_shift_days(&s, 3650));
        assert!((-3650..=-1).contains(&shift));
        let shifts: std::collections::HashSet<i64> =
            (0..50).map(|i| k.date_shift_days(&k.subject("uhb", &format!("p{i}")), 3650)).collect();
        assert!(shifts.len() > 40, "subjects get different shifts");
        assert_eq!(RegistryKey::new(&[1; 31]).unwrap_err(), "the registry key must be at least 32 bytes");
    }
}
