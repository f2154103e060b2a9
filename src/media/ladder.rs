//! The rendition ladder: the sizes an upload is encoded at, their bit-rate
//! caps, and how the job's thread budget is shared among their encoders.
//!
//! Rules:
//! - The top rendition is the MP4's size: the displayed size with the long side
//!   capped (`OutputProfile::max_long_side`), never upscaled. The MP4 reuses its
//!   encoded stream.
//! - Below it come the standard rungs 1080p, 720p, 480p and 360p, named by the
//!   *short* side (so a portrait 720p is 720x1280), each only when it is at most
//!   90% of the top's short side: never an upscale, never a near-copy of the top.
//!   A source shorter than 360p gets one rendition, at its own size.
//! - Threads: x264 with one thread encodes synchronously on the job's own
//!   thread, so renditions given one thread share it (with decoding and
//!   scaling). The top rendition gets its pixel share of the budget, at least
//!   two threads; each next one gets its share (at least two) while budget is
//!   left, else one. x264 threads per job never exceed the budget, whatever
//!   the number of renditions. A top copied from the source (passthrough)
//!   encodes nothing: see [`RenditionLadder::copying_top`].

use super::profile::round_to_even;

/// Short sides of the standard rungs, tallest first.
const RUNGS: [u32; 4] = [1080, 720, 480, 360];
/// A rung joins below the top only when at most this fraction of the top's short side.
const RUNG_GAP: f64 = 0.9;
/// Bit-rate cap (kbit/s) of a 1920x1080 rendition; others scale by pixel count to the power 0.75.
const CAP_1080P_KBPS: f64 = 6000.0;
/// Pixels of 1920x1080.
const PIXELS_1080P: f64 = 1920.0 * 1080.0;
/// Smallest bit-rate cap (kbit/s), for tiny renditions.
const MIN_CAP_KBPS: u32 = 300;

/// One rendition to encode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rung {
    /// `720p` and the like: the short side, then `p`.
    pub(crate) name: String,
    /// Displayed (upright) width, even.
    pub(crate) width: u32,
    /// Displayed (upright) height, even.
    pub(crate) height: u32,
    /// libx264 threads; 1 means "on the job's own thread".
    pub(crate) threads: usize,
    /// Peak bit rate libx264 keeps to (VBV), kbit/s; the buffer is twice this.
    pub(crate) max_kbps: u32,
}

/// The renditions of one job, top (the MP4's) first.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RenditionLadder {
    /// Never empty; `rungs[0]` is the top.
    pub(crate) rungs: Vec<Rung>,
}

impl RenditionLadder {
    /// The ladder under a top rendition of `top` (even, upright) with `budget` encoder
    /// threads; only the top when `with_lower_rungs` is false (MP4 only).
    pub(crate) fn plan(top: (u32, u32), with_lower_rungs: bool, budget: usize) -> Self {
        let mut sizes = vec![top];
        if with_lower_rungs {
            let short = top.0.min(top.1);
            for rung in RUNGS {
                if f64::from(rung) <= f64::from(short) * RUNG_GAP {
                    sizes.push(scale_to_short_side(top, rung));
                }
            }
        }
        let pixels: Vec<u64> = sizes
            .iter()
            .map(|&(w, h)| u64::from(w) * u64::from(h))
            .collect();
        let threads = share_threads(budget, &pixels);
        let rungs = sizes
            .into_iter()
            .zip(threads)
            .map(|((width, height), threads)| Rung {
                name: format!("{}p", width.min(height)),
                width,
                height,
                threads,
                max_kbps: max_kbps(width, height),
            })
            .collect();
        Self { rungs }
    }

    /// The same ladder with the top rendition copied from the source, not
    /// encoded, and the decoder's threads: the decoder gets the top's share
    /// (it now does the most work of the job thread) and each lower rung at
    /// least two, so none encodes on the job thread in step with the decoder.
    /// Measured on two cores, 30 s of 1080p (720p, 480p and 360p encoded):
    /// 18.1-19.7 s with the shares of [`RenditionLadder::plan`] and one
    /// decoder thread, 15.4-17.1 s so.
    pub(crate) fn copying_top(mut self, budget: usize) -> (Self, usize) {
        let pixels: Vec<u64> = self.rungs[1..]
            .iter()
            .map(|r| u64::from(r.width) * u64::from(r.height))
            .collect();
        let threads = if pixels.is_empty() {
            Vec::new()
        } else {
            share_threads(budget, &pixels)
        };
        let decoder_threads = std::mem::take(&mut self.rungs[0].threads).max(2);
        for (rung, threads) in self.rungs[1..].iter_mut().zip(threads) {
            rung.threads = threads.max(2);
        }
        (self, decoder_threads)
    }
}

/// `size` scaled so its short side is `short`, aspect kept, both sides even.
fn scale_to_short_side((width, height): (u32, u32), short: u32) -> (u32, u32) {
    let scale = f64::from(short) / f64::from(width.min(height).max(1));
    (
        round_to_even(f64::from(width) * scale, width),
        round_to_even(f64::from(height) * scale, height),
    )
}

/// The VBV cap of a rendition of `width`x`height`.
pub(crate) fn max_kbps(width: u32, height: u32) -> u32 {
    let pixels = f64::from(width) * f64::from(height);
    let kbps = CAP_1080P_KBPS * (pixels / PIXELS_1080P).powf(0.75);
    (kbps.round() as u32).max(MIN_CAP_KBPS)
}

/// Shares `budget` x264 threads among renditions of `pixels` each, largest first (see the module doc).
fn share_threads(budget: usize, pixels: &[u64]) -> Vec<usize> {
    let budget = budget.max(1);
    if pixels.len() == 1 {
        return vec![budget];
    }
    let total = pixels.iter().sum::<u64>().max(1) as f64;
    let mut left = budget;
    pixels
        .iter()
        .map(|&p| {
            let share = (budget as f64 * p as f64 / total).round() as usize;
            if left >= 2 {
                let threads = share.max(2).min(left);
                left -= threads;
                threads
            } else {
                1
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_and_sizes(ladder: &RenditionLadder) -> Vec<(String, u32, u32)> {
        ladder
            .rungs
            .iter()
            .map(|r| (r.name.clone(), r.width, r.height))
            .collect()
    }

    fn owned(list: &[(&str, u32, u32)]) -> Vec<(String, u32, u32)> {
        list.iter()
            .map(|(n, w, h)| (n.to_string(), *w, *h))
            .collect()
    }

    #[test]
    fn a_copied_top_leaves_its_threads_to_the_decoder_and_the_others() {
        let (ladder, decoder) = RenditionLadder::plan((1920, 1080), true, 4).copying_top(4);
        let threads: Vec<usize> = ladder.rungs.iter().map(|r| r.threads).collect();
        assert_eq!((decoder, threads), (2, vec![0, 2, 2, 2]));
        let (alone, decoder) = RenditionLadder::plan((1920, 1080), false, 4).copying_top(4);
        assert_eq!((alone.rungs.len(), decoder), (1, 4));
    }

    #[test]
    fn full_hd_gets_every_rung() {
        let ladder = RenditionLadder::plan((1920, 1080), true, 1);
        assert_eq!(
            names_and_sizes(&ladder),
            owned(&[
                ("1080p", 1920, 1080),
                ("720p", 1280, 720),
                ("480p", 854, 480),
                ("360p", 640, 360)
            ])
        );
    }

    #[test]
    fn portrait_rungs_are_named_by_the_short_side() {
        let ladder = RenditionLadder::plan((1080, 1920), true, 1);
        assert_eq!(
            names_and_sizes(&ladder),
            owned(&[
                ("1080p", 1080, 1920),
                ("720p", 720, 1280),
                ("480p", 480, 854),
                ("360p", 360, 640)
            ])
        );
    }

    #[test]
    fn no_upscale_no_near_copy_and_always_one() {
        let ladder = RenditionLadder::plan((1366, 768), true, 1);
        assert_eq!(
            names_and_sizes(&ladder),
            owned(&[("768p", 1366, 768), ("480p", 854, 480), ("360p", 640, 360)])
        );
        let ladder = RenditionLadder::plan((320, 240), true, 1);
        assert_eq!(names_and_sizes(&ladder), owned(&[("240p", 320, 240)]));
        let ladder = RenditionLadder::plan((1920, 1080), false, 1);
        assert_eq!(names_and_sizes(&ladder), owned(&[("1080p", 1920, 1080)]));
        let ladder = RenditionLadder::plan((640, 360), true, 1);
        assert_eq!(names_and_sizes(&ladder), owned(&[("360p", 640, 360)]));
    }

    #[test]
    fn threads_never_exceed_the_budget() {
        let threads = |budget| {
            RenditionLadder::plan((1920, 1080), true, budget)
                .rungs
                .iter()
                .map(|r| r.threads)
                .collect::<Vec<_>>()
        };
        assert_eq!(threads(1), vec![1, 1, 1, 1]);
        assert_eq!(threads(2), vec![2, 1, 1, 1]);
        assert_eq!(threads(4), vec![2, 2, 1, 1]);
        assert_eq!(threads(8), vec![5, 2, 1, 1]);
        for budget in 1..=64 {
            let pools: usize = threads(budget).into_iter().filter(|&t| t > 1).sum();
            assert!(pools <= budget, "budget {budget}: {:?}", threads(budget));
        }
        let mp4_only = RenditionLadder::plan((1920, 1080), false, 6);
        assert_eq!(mp4_only.rungs[0].threads, 6);
    }

    #[test]
    fn caps_scale_with_size() {
        assert_eq!(max_kbps(1920, 1080), 6000);
        let caps: Vec<u32> = [(1280, 720), (854, 480), (640, 360), (64, 64)]
            .iter()
            .map(|&(w, h)| max_kbps(w, h))
            .collect();
        assert!(caps.windows(2).all(|w| w[0] > w[1] || w[1] == MIN_CAP_KBPS));
        assert_eq!(caps[3], MIN_CAP_KBPS);
    }
}
