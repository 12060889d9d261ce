//! A history of values as one line of block characters, newest on the
//! right. Lines drawn together share one scale ([`top`]), so that equal
//! heights mean equal values: one ready step does not draw as tall as
//! eleven on the next line. A line of text rather than ratatui's
//! `Sparkline` so that it can sit in a table cell beside the figures it
//! explains.

use std::collections::VecDeque;

const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The top of the scale for histories drawn together: the largest of the
/// last `width` samples of any of them (0 when all are empty or zero).
pub fn top<'a>(histories: impl IntoIterator<Item = &'a VecDeque<u64>>, width: usize) -> u64 {
    histories
        .into_iter()
        .flat_map(|h| h.iter().rev().take(width))
        .copied()
        .max()
        .unwrap_or(0)
}

/// The last `width` samples, scaled so that `max` (or the largest shown,
/// if larger) is a full block; fewer are padded on the left. Zero is the
/// baseline (`▁`); anything above zero shows at least one step up.
pub fn spark<'a>(
    samples: impl DoubleEndedIterator<Item = &'a u64> + ExactSizeIterator,
    width: usize,
    max: u64,
) -> String {
    let shown: Vec<u64> = samples.rev().take(width).copied().collect();
    let max = shown.iter().copied().max().unwrap_or(0).max(max);
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
        assert_eq!(spark([0u64, 1, 4, 8].iter(), 6, 0), "  ▁▃▅█");
        assert_eq!(spark([5u64, 0, 0].iter(), 2, 0), "▁▁");
        assert_eq!(spark([].iter(), 3, 0), "   ");
        assert_eq!(spark([3u64, 3].iter(), 2, 0), "██");
    }

    #[test]
    fn lines_drawn_together_share_one_scale() {
        let small: VecDeque<u64> = [1, 1, 1].into();
        let big: VecDeque<u64> = [11, 0, 11].into();
        let max = top([&small, &big], 3);
        assert_eq!(max, 11);
        assert_eq!(spark(small.iter(), 3, max), "▃▃▃", "1 of 11 is low");
        assert_eq!(spark(big.iter(), 3, max), "█▁█");
        // Only the samples shown count: an old peak off the left edge
        // does not flatten the rest.
        let old_peak: VecDeque<u64> = [100, 2, 2].into();
        assert_eq!(top([&old_peak, &small], 2), 2);
    }
}
