//! Masks a step's secret values in its output before the output leaves the
//! worker: each occurrence becomes `***`, also when a value is split
//! across two reads of the pipe.

use aho_corasick::AhoCorasick;

/// What replaces a secret value.
pub const MASK: &[u8] = b"***";

/// Masks one output stream. Every byte inside an occurrence of a secret is
/// masked, also where occurrences overlap; a run of overlapping occurrences
/// becomes one `***`. Bytes that could still begin a secret are held back
/// until the next chunk says whether they do, so the output is the same
/// however the stream is cut into chunks. [`finish`] masks what is held at
/// the end.
///
/// [`finish`]: Masker::finish
#[derive(Debug, Default)]
pub struct Masker {
    /// The values, longest first, without duplicates.
    secrets: Vec<Vec<u8>>,
    /// Finds every occurrence of every value, overlapping ones included.
    /// `None` with values present means the values could not be indexed.
    matcher: Option<AhoCorasick>,
    /// Bytes not yet given out.
    held: Vec<u8>,
    /// How many bytes at the start of `held` lie inside a mask already
    /// given out.
    covered: usize,
    /// Set once the stream was withheld because the values could not be
    /// indexed.
    withheld: bool,
}

impl Masker {
    /// A masker for these values; empty ones are ignored.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|v| !v.is_empty())
            .map(|v| v.as_bytes().to_vec())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        secrets.dedup();
        let matcher = if secrets.is_empty() {
            None
        } else {
            AhoCorasick::new(&secrets).ok()
        };
        Self {
            secrets,
            matcher,
            ..Self::default()
        }
    }

    /// The part of the stream, up to the end of `chunk`, that can go out now.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.run(chunk, false)
    }

    /// The rest of the stream, masked: it ended, so what is held can no
    /// longer grow into a longer value.
    pub fn finish(&mut self) -> Vec<u8> {
        self.run(&[], true)
    }

    fn run(&mut self, chunk: &[u8], at_end: bool) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        let Some(matcher) = &self.matcher else {
            // Values that cannot be searched for: nothing of the stream may
            // go out but one mask.
            if self.withheld || chunk.is_empty() {
                return Vec::new();
            }
            self.withheld = true;
            return MASK.to_vec();
        };
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(chunk);
        let ready = if at_end {
            data.len()
        } else {
            self.ready_len(&data)
        };
        // Every occurrence starting before `ready` lies wholly in `data`;
        // those starting later are found again once more data arrives.
        let mut found: Vec<(usize, usize)> = matcher
            .find_overlapping_iter(&data)
            .map(|m| (m.start(), m.end()))
            .filter(|&(start, _)| start < ready)
            .collect();
        found.sort_unstable();
        let mut out = Vec::with_capacity(ready + MASK.len());
        let mut covered = self.covered;
        let mut next = found.iter().peekable();
        for (at, &byte) in data[..ready].iter().enumerate() {
            while let Some(&(_, end)) = next.next_if(|&&(start, _)| start == at) {
                if at >= covered {
                    out.extend_from_slice(MASK);
                }
                covered = covered.max(end);
            }
            if at >= covered {
                out.push(byte);
            }
        }
        self.covered = covered.saturating_sub(ready);
        self.held = data.split_off(ready);
        out
    }

    /// How much of `data` can be decided now: everything before the first
    /// position from which the rest of `data` is the start of a longer value.
    fn ready_len(&self, data: &[u8]) -> usize {
        let longest = self.secrets.first().map_or(0, Vec::len);
        let from = data.len().saturating_sub(longest.saturating_sub(1));
        (from..data.len())
            .find(|&at| {
                let rest = &data[at..];
                self.secrets
                    .iter()
                    .any(|s| s.len() > rest.len() && s.starts_with(rest))
            })
            .unwrap_or(data.len())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn mask_all(secrets: &[&str], chunks: &[&[u8]]) -> Vec<u8> {
        let mut m = Masker::new(secrets.iter().copied());
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.feed(c));
        }
        out.extend(m.finish());
        out
    }

    #[test]
    fn a_secret_is_masked_within_a_chunk_and_across_chunks() {
        let s = ["hunter2"];
        assert_eq!(mask_all(&s, &[b"pw=hunter2\n"]), b"pw=***\n");
        assert_eq!(mask_all(&s, &[b"pw=hun", b"ter2\n"]), b"pw=***\n");
        assert_eq!(
            mask_all(&s, &[b"pw=h", b"u", b"nter", b"2", b"2"]),
            b"pw=***2"
        );
        assert_eq!(mask_all(&s, &[b"hunt", b"ing\n"]), b"hunting\n");
        assert_eq!(mask_all(&s, &[b"ends with hunt"]), b"ends with hunt");
        assert_eq!(mask_all(&s, &[b"hhunter2hunter2"]), b"h******");
    }

    #[test]
    fn the_longest_secret_wins_and_no_secret_changes_nothing() {
        assert_eq!(mask_all(&["abc", "abcdef"], &[b"xabcdefx"]), b"x***x");
        assert_eq!(mask_all(&[], &[b"plain"]), b"plain");
        assert_eq!(mask_all(&[""], &[b"plain"]), b"plain");
    }

    /// Every way of cutting `text` into two chunks, and byte by byte.
    fn all_cuttings(secrets: &[&str], text: &[u8]) -> Vec<Vec<u8>> {
        let mut outs: Vec<Vec<u8>> = (0..=text.len())
            .map(|cut| mask_all(secrets, &[&text[..cut], &text[cut..]]))
            .collect();
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        outs.push(mask_all(secrets, &bytes));
        outs
    }

    #[test]
    fn a_value_that_begins_a_longer_one_is_masked_whole_across_chunks() {
        let s = ["abc", "abcdef"];
        assert_eq!(mask_all(&s, &[b"xabc", b"defx"]), b"x***x");
        assert_eq!(mask_all(&s, &[b"xabc", b"dex"]), b"x***dex");
        for out in all_cuttings(&s, b"xabcdefx") {
            assert_eq!(out, b"x***x");
        }
    }

    #[test]
    fn held_bytes_are_masked_when_the_stream_ends() {
        let s = ["abcdef", "bc"];
        assert_eq!(mask_all(&s, &[b"xabc"]), b"xa***");
        for out in all_cuttings(&s, b"xabc") {
            assert_eq!(out, b"xa***");
        }
        assert_eq!(mask_all(&["abcdef"], &[b"xabcde"]), b"xabcde");
    }

    #[test]
    fn overlapping_values_are_covered_together() {
        let s = ["abc", "bcd"];
        for out in all_cuttings(&s, b"xabcdx") {
            assert_eq!(out, b"x***x");
        }
        for out in all_cuttings(&["abc", "cde", "efg"], b"abcdefgh") {
            assert_eq!(out, b"***h");
        }
        for out in all_cuttings(&["aa"], b"aaab") {
            assert_eq!(out, b"***b");
        }
        for out in all_cuttings(&["abc", "bcdefgh"], b"abcdefgx") {
            assert_eq!(out, b"***defgx");
        }
    }

    proptest! {
        /// Random values in random text cut at random points: no value comes
        /// out, and the output is the one the whole text gives in one chunk.
        #[test]
        fn any_values_any_chunking_mask_the_same(
            secrets in proptest::collection::vec("[ab]{1,5}", 1..4),
            text in "[abc]{0,60}",
            cuts in proptest::collection::vec(0usize..64, 0..8),
        ) {
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&bytes[at..c]);
                at = c;
            }
            chunks.push(&bytes[at..]);
            let whole = mask_all(&secrets, &[bytes]);
            let cut = mask_all(&secrets, &chunks);
            let out = String::from_utf8(cut.clone()).unwrap();
            for secret in &secrets {
                prop_assert!(!out.contains(secret), "{secret:?} in {out:?}");
            }
            prop_assert_eq!(cut, whole);
            let by_byte: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(mask_all(&secrets, &by_byte), mask_all(&secrets, &[bytes]));
        }
    }

    proptest! {
        /// However the output is cut into chunks, the secret never comes
        /// out whole, and output without it comes out unchanged.
        #[test]
        fn no_chunking_lets_a_secret_through(
            prefix in "[a-z ]{0,20}",
            suffix in "[a-z ]{0,20}",
            cuts in proptest::collection::vec(0usize..60, 0..6),
        ) {
            let secret = "S3cr3t-v4lue";
            let text = format!("{prefix}{secret}{suffix}{secret}");
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&bytes[at..c]);
                at = c;
            }
            chunks.push(&bytes[at..]);
            let out = mask_all(&[secret], &chunks);
            let out = String::from_utf8(out).unwrap();
            prop_assert_eq!(out, format!("{prefix}***{suffix}***"));
            let plain = format!("{prefix}{suffix}");
            prop_assert_eq!(mask_all(&[secret], &[plain.as_bytes()]), plain.as_bytes());
        }
    }
}
