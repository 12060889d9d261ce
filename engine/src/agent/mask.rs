//! Masks a step's secret values in its output before the output leaves the
//! worker: each occurrence becomes `***`, also when a value is split
//! across two reads of the pipe.

/// What replaces a secret value.
pub const MASK: &[u8] = b"***";

/// Masks one output stream. Bytes that could be the start of a secret are
/// held back until the next chunk says whether they are; [`finish`] gives
/// what is held at the end.
///
/// [`finish`]: Masker::finish
#[derive(Debug, Default)]
pub struct Masker {
    /// Longest first, so a value that contains another is masked whole.
    secrets: Vec<Vec<u8>>,
    held: Vec<u8>,
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
        Self {
            secrets,
            held: Vec::new(),
        }
    }

    /// The part of `chunk` (after what was held) that can go out now.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        while i < data.len() {
            let rest = &data[i..];
            if let Some(secret) = self.secrets.iter().find(|s| rest.starts_with(s)) {
                out.extend_from_slice(MASK);
                i += secret.len();
            } else if self
                .secrets
                .iter()
                .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                // The data ends inside what may be a secret: wait for more.
                self.held = rest.to_vec();
                break;
            } else {
                out.push(data[i]);
                i += 1;
            }
        }
        out
    }

    /// What is still held: the stream ended, so it was no secret.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
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
