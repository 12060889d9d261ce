//! A history of values as one line of block characters, newest on the
//! right, scaled to the largest value shown. A line of text rather than
//! ratatui's `Sparkline` so that it can sit in a table cell beside the
//! figures it explains.

const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The last `width` samples; fewer are padded on the left. Zero is the
/// baseline (`▁`); anything above zero shows at least one step up.
pub fn spark<'a>(
    samples: impl DoubleEndedIterator<Item = &'a u64> + ExactSizeIterator,
    width: usize,
) -> String {
    let shown: Vec<u64> = samples.rev().take(width).copied().collect();
    let max = shown.iter().copied().max().unwrap_or(0);
    let mut out: String = " ".repeat(width - shown.len());
    for v in shown.into_iter().rev() {
        let level = if v == 0 || max == 0 {
            0
        } else {
            // 1..=7, rounding up so that a small value still shows.
            1 + v.saturating_mul(6).div_ceil(max)
        };
        out.push(LEVELS[usize::try_from(level).unwrap_or(7).min(7)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_to_the_largest_and_pads_on_the_left() {
        assert_eq!(spark([0u64, 1, 4, 8].iter(), 6), "  ▁▃▅█");
        assert_eq!(spark([5u64, 0, 0].iter(), 2), "▁▁");
        assert_eq!(spark([].iter(), 3), "   ");
        assert_eq!(spark([3u64, 3].iter(), 2), "██");
    }
}
