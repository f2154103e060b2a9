//! What a `Range` header asks of a file of a known length (RFC 9110,
//! section 14), decided from the header's text and the length alone.

use std::ops::Range;

/// More ranges than this in one header are answered with the whole file: a
/// request cannot make the server seek and frame many small pieces.
pub const MAX_RANGES: usize = 16;

/// The bytes a request gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// The whole file (`200`): no `Range`, one that is invalid or in another
    /// unit (which RFC 9110 says to ignore), too many or overlapping ranges,
    /// or an empty file.
    Whole,
    /// These ranges (`206`), in the order asked: one or more, none empty,
    /// each within the file, no two overlapping.
    Parts(Vec<Range<u64>>),
    /// No range starts inside the file (`416`).
    Unsatisfiable,
}

/// The ranges `header` (a `Range` value) selects of a file of `len` bytes.
/// A last position past the end is clamped to the last byte; a suffix longer
/// than the file is the whole file; ranges that start past the end are
/// dropped, and only when all are is the request unsatisfiable.
pub fn parse(header: &str, len: u64) -> Ranges {
    let Some((unit, set)) = header.trim().split_once('=') else {
        return Ranges::Whole;
    };
    if !unit.eq_ignore_ascii_case("bytes") || len == 0 {
        return Ranges::Whole;
    }
    let mut parts = Vec::new();
    let mut specs = 0;
    // A list may hold empty elements (RFC 9110 5.6.1): `bytes=0-1, ,5-6`.
    for spec in set.split(',').map(|s| s.trim_matches([' ', '\t'])) {
        if spec.is_empty() {
            continue;
        }
        specs += 1;
        if specs > MAX_RANGES {
            return Ranges::Whole;
        }
        match spec_range(spec, len) {
            Some(Spec::Within(range)) => parts.push(range),
            Some(Spec::PastEnd) => {}
            None => return Ranges::Whole,
        }
    }
    if specs == 0 {
        return Ranges::Whole;
    }
    if parts.is_empty() {
        return Ranges::Unsatisfiable;
    }
    let mut sorted: Vec<&Range<u64>> = parts.iter().collect();
    sorted.sort_by_key(|r| r.start);
    if sorted.windows(2).any(|w| w[1].start < w[0].end) {
        return Ranges::Whole;
    }
    Ranges::Parts(parts)
}

/// One range-spec, checked against the file.
enum Spec {
    /// The bytes it selects, clamped to the file.
    Within(Range<u64>),
    /// It selects nothing of the file.
    PastEnd,
}

/// `first-last`, `first-` or `-suffix`; `None` when it is not one of them.
fn spec_range(spec: &str, len: u64) -> Option<Spec> {
    let (first, last) = spec.split_once('-')?;
    if first.is_empty() {
        let suffix = number(last)?;
        return Some(if suffix == 0 {
            Spec::PastEnd
        } else {
            Spec::Within(len.saturating_sub(suffix)..len)
        });
    }
    let start = number(first)?;
    let end = match last {
        "" => len,
        last => {
            let last = number(last)?;
            if last < start {
                return None;
            }
            last.saturating_add(1).min(len)
        }
    };
    Some(if start < len {
        Spec::Within(start..end)
    } else {
        Spec::PastEnd
    })
}

/// A run of decimal digits; numbers too large for `u64` saturate, as they
/// are past the end of any file either way.
fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: u64 = 450_000;

    /// The parts selected, as `(first, last)` byte positions as in `Content-Range`.
    fn parts(header: &str, len: u64) -> Vec<(u64, u64)> {
        match parse(header, len) {
            Ranges::Parts(parts) => parts.iter().map(|r| (r.start, r.end - 1)).collect(),
            other => panic!("{header}: {other:?}"),
        }
    }

    #[test]
    fn a_last_position_past_the_end_is_clamped() {
        assert_eq!(parts("bytes=0-1048575", LEN), [(0, LEN - 1)]);
        assert_eq!(parts("bytes=449000-1048575", LEN), [(449_000, LEN - 1)]);
        assert_eq!(parts("bytes=0-449999", LEN), [(0, LEN - 1)]);
        assert_eq!(parts("bytes=100-199", LEN), [(100, 199)]);
    }

    #[test]
    fn single_bytes_open_ranges_and_suffixes() {
        assert_eq!(parts("bytes=0-0", LEN), [(0, 0)]);
        assert_eq!(parts("bytes=449999-449999", LEN), [(449_999, LEN - 1)]);
        assert_eq!(parts("bytes=1000-", LEN), [(1000, LEN - 1)]);
        assert_eq!(parts("bytes=0-", LEN), [(0, LEN - 1)]);
        assert_eq!(parts("bytes=-500", LEN), [(LEN - 500, LEN - 1)]);
        assert_eq!(parts("bytes=-1", LEN), [(LEN - 1, LEN - 1)]);
        // A suffix longer than the file is all of it.
        assert_eq!(parts("bytes=-1000000", LEN), [(0, LEN - 1)]);
        assert_eq!(parts("bytes=-450000", LEN), [(0, LEN - 1)]);
    }

    #[test]
    fn several_ranges_keep_their_order() {
        assert_eq!(
            parts("bytes=0-99,200-299,-100", LEN),
            [(0, 99), (200, 299), (LEN - 100, LEN - 1)]
        );
        assert_eq!(parts("bytes=500-599,0-9", LEN), [(500, 599), (0, 9)]);
        // Adjacent is not overlapping.
        assert_eq!(parts("bytes=0-9,10-19", LEN), [(0, 9), (10, 19)]);
        // Ranges past the end are dropped while another one is satisfiable.
        assert_eq!(parts("bytes=0-9,500000-500100", LEN), [(0, 9)]);
    }

    #[test]
    fn overlapping_or_too_many_ranges_get_the_whole_file() {
        for header in [
            "bytes=0-99,50-149",
            "bytes=0-0,0-0",
            "bytes=0-,100-199",
            "bytes=-100,449950-",
            "bytes=200-299,0-1000",
        ] {
            assert_eq!(parse(header, LEN), Ranges::Whole, "{header}");
        }
        let sixteen: Vec<String> = (0..16)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
            .collect();
        let header = format!("bytes={}", sixteen.join(","));
        assert_eq!(parts(&header, LEN).len(), 16);
        let header = format!("{header},1000-1001");
        assert_eq!(parse(&header, LEN), Ranges::Whole);
    }

    #[test]
    fn ranges_that_start_past_the_end_are_unsatisfiable() {
        for header in [
            "bytes=450000-",
            "bytes=450000-450001",
            "bytes=1000000-2000000",
            "bytes=-0",
            "bytes=450000-,999999-",
            "bytes=99999999999999999999999999-",
        ] {
            assert_eq!(parse(header, LEN), Ranges::Unsatisfiable, "{header}");
        }
    }

    #[test]
    fn invalid_headers_and_other_units_are_ignored() {
        for header in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=-",
            "bytes=abc",
            "bytes=1-abc",
            "bytes=5-1",
            "bytes=0-1,5-1",
            "bytes=1--2",
            "bytes=+1-2",
            "bytes=0x10-0x20",
            "bytes=0 - 1",
            "bytes =0-1",
            "items=0-1",
            "bytes=0-1;q=1",
            "bytes=٣-٤",
        ] {
            assert_eq!(parse(header, LEN), Ranges::Whole, "{header:?}");
        }
    }

    #[test]
    fn huge_numbers_saturate() {
        assert_eq!(
            parts("bytes=0-99999999999999999999999999", LEN),
            [(0, LEN - 1)]
        );
        assert_eq!(
            parts("bytes=-99999999999999999999999999", LEN),
            [(0, LEN - 1)]
        );
        assert_eq!(parts(&format!("bytes=0-{}", u64::MAX), LEN), [(0, LEN - 1)]);
        assert_eq!(
            parts(&format!("bytes={}-", LEN - 1), LEN),
            [(LEN - 1, LEN - 1)]
        );
    }

    #[test]
    fn whitespace_around_list_elements_and_the_unit_case_are_accepted() {
        assert_eq!(
            parts(" bytes=0-1 ,\t5-6 , , 10-", LEN),
            [(0, 1), (5, 6), (10, LEN - 1)]
        );
        assert_eq!(parts("Bytes=0-1", LEN), [(0, 1)]);
        assert_eq!(parts("BYTES=-2", LEN), [(LEN - 2, LEN - 1)]);
    }

    #[test]
    fn an_empty_file_is_sent_whole() {
        assert_eq!(parse("bytes=0-", 0), Ranges::Whole);
        assert_eq!(parse("bytes=-5", 0), Ranges::Whole);
        assert_eq!(parts("bytes=0-0", 1), [(0, 0)]);
        assert_eq!(parse("bytes=1-", 1), Ranges::Unsatisfiable);
    }
}
