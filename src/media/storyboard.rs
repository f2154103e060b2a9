//! The storyboard, for seek-bar previews: a small tile of the picture every
//! few seconds, taken from the upright frames the encoder gets (no second
//! decode), laid out in one JPEG sprite (`storyboard.jpg`) and described by a
//! WebVTT file (`storyboard.vtt`) with one cue per tile naming its rectangle,
//! `storyboard.jpg#xywh=x,y,w,h`: the thumbnails format of Mux and of
//! video.js's thumbnail plugins.
//!
//! The cues name the sprite by a relative reference, which a client resolves
//! against the VTT's own URL: right wherever the two files are served side by
//! side (the local media folder, a public bucket). Presigned URLs are signed
//! one by one, so with a private bucket the API server serves the VTT with the
//! reference rewritten to the sprite's presigned URL (`storage::playlist`),
//! as it does HLS playlists. A signed URL written into the file itself would
//! stop working when its signature expires.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ffmpeg_next::format::Pixel;
use ffmpeg_next::frame;

use super::error::{internal, MediaError};
use super::jpeg::write_jpeg;
use super::profile::fit_within;
use super::scale::{scale, Scaler};

/// File name of the storyboard's WebVTT inside the output folder.
pub const STORYBOARD_VTT: &str = "storyboard.vtt";
/// File name of the storyboard's sprite inside the output folder.
pub const STORYBOARD_IMAGE: &str = "storyboard.jpg";

/// The interval rule, with [`MAX_TILES`]: a tile every `MIN_TILE_INTERVAL_SECS`
/// seconds, or every `ceil(duration / MAX_TILES)` whole seconds when that is
/// longer. When the probed duration is unknown or short of the truth, the
/// interval doubles (every other tile kept) as often as `MAX_TILES` needs.
pub(crate) const MIN_TILE_INTERVAL_SECS: u32 = 1;
/// Most tiles in a storyboard (see [`MIN_TILE_INTERVAL_SECS`]).
pub(crate) const MAX_TILES: usize = 100;
/// Longest side of a tile in pixels. Tiles keep the picture's aspect ratio,
/// have even sides and are never upscaled: 160x90 for 16:9, 90x160 for 9:16.
pub(crate) const TILE_LONG_SIDE: u32 = 160;
/// Tiles per row of the sprite.
pub(crate) const SPRITE_COLUMNS: usize = 10;
/// Output times are counted up to this many seconds (media limits end such inputs long before).
const LATEST_SECS: f64 = 1e9;

/// The storyboard `transcode` wrote.
#[derive(Debug, Clone)]
pub struct Storyboard {
    /// The WebVTT file, one cue per tile, back to back from 0 to the duration.
    pub vtt: PathBuf,
    /// The JPEG sprite: tiles left to right, then top to bottom.
    pub image: PathBuf,
    /// Number of tiles (and cues).
    pub tiles: usize,
    /// Seconds between the starts of two tiles.
    pub interval_secs: u32,
    /// Width of a tile in pixels.
    pub tile_width: u32,
    /// Height of a tile in pixels.
    pub tile_height: u32,
}

/// Watches the upright output frames go by and keeps one small tile per interval.
pub(crate) struct StoryboardPicker {
    /// Seconds between tile starts; tile `k` shows the first frame at or after `k * interval_secs`.
    interval_secs: u32,
    /// The tiles so far, in time order.
    tiles: Vec<frame::Video>,
    /// Size of every tile, fixed by the first frame offered.
    tile_size: Option<(u32, u32)>,
    /// Scales a picked frame down to `tile_size`.
    scaler: Option<Scaler>,
}

impl StoryboardPicker {
    /// A picker for a video of `duration` seconds (as probed; `None` if unknown).
    pub(crate) fn new(duration: Option<f64>) -> Self {
        Self {
            interval_secs: tile_interval(duration),
            tiles: Vec::new(),
            tile_size: None,
            scaler: None,
        }
    }

    /// Offers the frame shown at `at` seconds; scales it only if it starts a tile.
    pub(crate) fn offer(&mut self, frame: &frame::Video, at: f64) -> Result<(), MediaError> {
        if self.tiles.len() >= tiles_started_by(at, self.interval_secs) {
            return Ok(());
        }
        let size = *self
            .tile_size
            .get_or_insert_with(|| fit_within(frame.width(), frame.height(), TILE_LONG_SIDE));
        let tile = scale(&mut self.scaler, size, frame)?;
        // After a gap longer than an interval the tile repeats, so that tile
        // `k` still starts at `k * interval_secs`.
        while self.tiles.len() < tiles_started_by(at, self.interval_secs) {
            self.tiles.push(tile.clone());
            if self.tiles.len() > MAX_TILES {
                self.interval_secs = self.interval_secs.saturating_mul(2);
                self.tiles = std::mem::take(&mut self.tiles)
                    .into_iter()
                    .step_by(2)
                    .collect();
            }
        }
        Ok(())
    }

    /// Writes the sprite to `image` and the cues to `vtt`; the last cue ends at `duration` seconds.
    pub(crate) fn write(
        &self,
        duration: f64,
        image: &Path,
        vtt: &Path,
    ) -> Result<Storyboard, MediaError> {
        let (tile_width, tile_height) = match self.tile_size {
            Some(size) if !self.tiles.is_empty() => size,
            _ => return Err(MediaError::corrupt("no video frame could be decoded")),
        };
        let grid = Grid::new(self.tiles.len(), (tile_width, tile_height));
        let sprite = grid.compose(&self.tiles);
        write_jpeg(&sprite, (sprite.width(), sprite.height()), image)?;
        let image_name = image
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let cues = webvtt(&grid, self.interval_secs, duration, &image_name);
        std::fs::write(vtt, cues).map_err(internal("writing storyboard.vtt"))?;
        Ok(Storyboard {
            vtt: vtt.to_path_buf(),
            image: image.to_path_buf(),
            tiles: self.tiles.len(),
            interval_secs: self.interval_secs,
            tile_width,
            tile_height,
        })
    }
}

/// Whole seconds between tiles for a video of `duration` seconds.
fn tile_interval(duration: Option<f64>) -> u32 {
    let spread = duration
        .filter(|d| d.is_finite() && *d > 0.0)
        .map_or(0.0, |d| (d.min(LATEST_SECS) / MAX_TILES as f64).ceil());
    // In range: at most 10^9 / 100.
    (spread as u32).max(MIN_TILE_INTERVAL_SECS)
}

/// How many tiles have started by `at` seconds; the first frame always starts one.
fn tiles_started_by(at: f64, interval_secs: u32) -> usize {
    let at = if at.is_finite() {
        at.clamp(0.0, LATEST_SECS)
    } else {
        0.0
    };
    // In range: at most 10^9 + 1.
    (at / f64::from(interval_secs)).floor() as usize + 1
}

/// Where each tile sits in the sprite.
struct Grid {
    tiles: usize,
    columns: usize,
    tile: (u32, u32),
}

impl Grid {
    fn new(tiles: usize, tile: (u32, u32)) -> Grid {
        Grid {
            tiles,
            columns: tiles.clamp(1, SPRITE_COLUMNS),
            tile,
        }
    }

    /// Width and height of the whole sprite.
    fn size(&self) -> (u32, u32) {
        let rows = self.tiles.div_ceil(self.columns).max(1);
        (self.tile.0 * self.columns as u32, self.tile.1 * rows as u32)
    }

    /// `x, y, w, h` of tile `index` in the sprite.
    fn rect(&self, index: usize) -> (u32, u32, u32, u32) {
        let (column, row) = (index % self.columns, index / self.columns);
        let (w, h) = self.tile;
        (column as u32 * w, row as u32 * h, w, h)
    }

    /// The sprite: each tile copied to its place, black where the last row has none.
    fn compose(&self, tiles: &[frame::Video]) -> frame::Video {
        let (width, height) = self.size();
        let mut sprite = frame::Video::new(Pixel::YUV420P, width, height);
        for (plane, black) in [(0, 16), (1, 128), (2, 128)] {
            sprite.data_mut(plane).fill(black);
        }
        for (index, tile) in tiles.iter().enumerate() {
            let (x, y, w, h) = self.rect(index);
            for plane in 0..3 {
                // Chroma planes are half size; tile sides and positions are even.
                let shift = u32::from(plane > 0);
                let [x, y, w, h] = [x, y, w, h].map(|v| (v >> shift) as usize);
                let (from_stride, to_stride) = (tile.stride(plane), sprite.stride(plane));
                let from = tile.data(plane);
                let to = sprite.data_mut(plane);
                for row in 0..h {
                    let at = (y + row) * to_stride + x;
                    to[at..at + w].copy_from_slice(&from[row * from_stride..][..w]);
                }
            }
        }
        sprite
    }
}

/// The WebVTT text: cue `k` from `k * interval_secs` to the next, the last to `duration`.
fn webvtt(grid: &Grid, interval_secs: u32, duration: f64, image: &str) -> String {
    let step_ms = u64::from(interval_secs) * 1000;
    // Rounded to the millisecond the cues are written in; `as` saturates (NaN is 0).
    let duration_ms = (duration * 1000.0).round() as u64;
    let mut text = String::from("WEBVTT\n");
    for index in 0..grid.tiles {
        let start = index as u64 * step_ms;
        let end = if index + 1 == grid.tiles {
            duration_ms.max(start + 1)
        } else {
            start + step_ms
        };
        let (x, y, w, h) = grid.rect(index);
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "\n{} --> {}\n{image}#xywh={x},{y},{w},{h}\n",
            timestamp(start),
            timestamp(end)
        );
    }
    text
}

/// `HH:MM:SS.mmm`, as WebVTT cue timings are written (hours may pass 99).
fn timestamp(ms: u64) -> String {
    let (secs, ms) = (ms / 1000, ms % 1000);
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_keeps_at_most_max_tiles() {
        assert_eq!(tile_interval(None), 1);
        assert_eq!(tile_interval(Some(0.4)), 1);
        assert_eq!(tile_interval(Some(100.0)), 1);
        assert_eq!(tile_interval(Some(100.5)), 2);
        assert_eq!(tile_interval(Some(3600.0)), 36);
        assert_eq!(tile_interval(Some(f64::NAN)), 1);
        assert_eq!(tile_interval(Some(1e300)), 10_000_000);
        for duration in [0.5, 1.0, 99.9, 100.0, 101.0, 599.0, 7200.0, 86_399.0] {
            let interval = tile_interval(Some(duration));
            let tiles = tiles_started_by(duration - 0.04, interval);
            assert!((1..=MAX_TILES).contains(&tiles), "{duration} s: {tiles}");
        }
    }

    #[test]
    fn timestamps_are_hours_minutes_seconds_and_milliseconds() {
        assert_eq!(timestamp(0), "00:00:00.000");
        assert_eq!(timestamp(1_500), "00:00:01.500");
        assert_eq!(timestamp(61_001), "00:01:01.001");
        assert_eq!(timestamp(3_600_000 + 59 * 60_000 + 59_999), "01:59:59.999");
        assert_eq!(timestamp(100 * 3_600_000), "100:00:00.000");
    }

    #[test]
    fn cues_are_back_to_back_and_name_their_tiles() {
        let grid = Grid::new(12, (160, 90));
        assert_eq!(grid.size(), (1600, 180));
        let vtt = webvtt(&grid, 2, 23.456, "storyboard.jpg");
        assert!(
            vtt.starts_with(
                "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nstoryboard.jpg#xywh=0,0,160,90\n"
            ),
            "{vtt}"
        );
        assert!(
            vtt.contains("\n00:00:18.000 --> 00:00:20.000\nstoryboard.jpg#xywh=1440,0,160,90\n"),
            "{vtt}"
        );
        assert!(
            vtt.ends_with("\n00:00:22.000 --> 00:00:23.456\nstoryboard.jpg#xywh=160,90,160,90\n"),
            "{vtt}"
        );
        assert_eq!(vtt.matches(" --> ").count(), 12);
        // One tile under one interval: a single cue over the whole video.
        let vtt = webvtt(&Grid::new(1, (90, 160)), 1, 0.5, "storyboard.jpg");
        assert_eq!(
            vtt,
            "WEBVTT\n\n00:00:00.000 --> 00:00:00.500\nstoryboard.jpg#xywh=0,0,90,160\n"
        );
    }

    fn flat_frame(luma: u8) -> frame::Video {
        let mut picture = frame::Video::new(Pixel::YUV420P, 320, 180);
        picture.data_mut(0).fill(luma);
        picture.data_mut(1).fill(128);
        picture.data_mut(2).fill(128);
        picture
    }

    #[test]
    fn a_tile_per_interval_and_no_more_than_max_tiles_when_the_duration_was_wrong() {
        let mut picker = StoryboardPicker::new(Some(3.0));
        for n in 0..75 {
            picker
                .offer(&flat_frame(n as u8), f64::from(n) * 0.04)
                .unwrap();
        }
        // Frames at 0, 1.0 and 2.0 s start the tiles, scaled to 160x90.
        let luma: Vec<u8> = picker.tiles.iter().map(|t| t.data(0)[0]).collect();
        assert_eq!(luma, [0, 25, 50]);
        assert_eq!(picker.tile_size, Some((160, 90)));

        // Said to be 3 s long, but 250 s of frames come: the interval doubles twice.
        let mut picker = StoryboardPicker::new(Some(3.0));
        for n in 0..250 {
            picker.offer(&flat_frame(n as u8), f64::from(n)).unwrap();
        }
        assert_eq!(picker.interval_secs, 4);
        assert_eq!(picker.tiles.len(), 63);
        assert_eq!(picker.tiles[1].data(0)[0], 4);

        // The tiles a gap spans show the frame after it, so tiles stay on the interval grid.
        let mut picker = StoryboardPicker::new(Some(10.0));
        picker.offer(&flat_frame(1), 0.0).unwrap();
        picker.offer(&flat_frame(2), 3.5).unwrap();
        let luma: Vec<u8> = picker.tiles.iter().map(|t| t.data(0)[0]).collect();
        assert_eq!(luma, [1, 2, 2, 2]);
    }
}
