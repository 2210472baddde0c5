//! Disclosure control of a single count: cells below a cohort's threshold are
//! suppressed, the others rounded to a base, so a published count neither
//! singles out a few people nor reveals exact differences between queries.

/// A count as it may be shown: `None` when suppressed.
pub fn disclose(count: i64, threshold: i64, rounding: i64) -> Option<i64> {
    if count < threshold.max(1) {
        return None;
    }
    let base = rounding.max(1);
    // Round half up to the base; never below the threshold, which would invite a guess.
    let rounded = (count + base / 2) / base * base;
    Some(rounded.max(threshold))
}

#[cfg(test)]
mod tests {
    use super::disclose;

    #[test]
    fn small_cells_are_suppressed_and_others_rounded() {
        assert_eq!(disclose(0, 10, 5), None);
        assert_eq!(disclose(9, 10, 5), None);
        assert_eq!(disclose(10, 10, 5), Some(10));
        assert_eq!(disclose(12, 10, 5), Some(10));
        assert_eq!(disclose(13, 10, 5), Some(15));
        assert_eq!(disclose(11, 12, 5), None);
        assert_eq!(disclose(12, 12, 5), Some(12), "a rounded value never drops below the threshold");
        assert_eq!(disclose(1234, 10, 1), Some(1234));
    }
}
