//! Display rotation: reading it from a display matrix and applying it to
//! yuv420p planes, so phone video comes out upright.

use ffmpeg_next::{format::Pixel, frame};

/// Clockwise rotation needed to show coded frames upright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rotation {
    None,
    Clockwise90,
    Half,
    Clockwise270,
}

impl Rotation {
    /// Reads a 3x3 display matrix (nine native-endian 32-bit fixed-point
    /// values, as in libavutil/display.h), following the ffmpeg CLI: the
    /// counter-clockwise angle is negated and snapped to a quarter turn.
    /// Mirroring (a negative determinant) is ignored, as ffmpeg 5.1 does.
    pub(crate) fn from_display_matrix(bytes: &[u8]) -> Self {
        let Some(matrix) = parse_matrix(bytes) else {
            return Self::None;
        };
        let fixed = |v: i32| f64::from(v) / 65536.0;
        let scale_x = fixed(matrix[0]).hypot(fixed(matrix[3]));
        let scale_y = fixed(matrix[1]).hypot(fixed(matrix[4]));
        if scale_x == 0.0 || scale_y == 0.0 {
            return Self::None;
        }
        // av_display_rotation_get(): counter-clockwise degrees.
        let counter_clockwise = -(fixed(matrix[1]) / scale_y)
            .atan2(fixed(matrix[0]) / scale_x)
            .to_degrees();
        Self::from_clockwise_degrees(-counter_clockwise.round())
    }

    /// Snaps any clockwise angle to the nearest quarter turn.
    pub(crate) fn from_clockwise_degrees(degrees: f64) -> Self {
        if !degrees.is_finite() {
            return Self::None;
        }
        match ((degrees / 90.0).round() as i64).rem_euclid(4) {
            1 => Self::Clockwise90,
            2 => Self::Half,
            3 => Self::Clockwise270,
            _ => Self::None,
        }
    }

    /// Whether the displayed width is the coded height.
    pub(crate) fn swaps_axes(self) -> bool {
        matches!(self, Self::Clockwise90 | Self::Clockwise270)
    }
}

fn parse_matrix(bytes: &[u8]) -> Option<[i32; 9]> {
    if bytes.len() < 36 {
        return None;
    }
    let mut matrix = [0i32; 9];
    for (value, chunk) in matrix.iter_mut().zip(bytes.chunks_exact(4)) {
        *value = i32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Some(matrix)
}

/// Rotates a yuv420p frame into a new one; the caller sets timestamps.
pub(crate) fn rotate_frame(src: &frame::Video, rotation: Rotation) -> frame::Video {
    let (width, height) = if rotation.swaps_axes() {
        (src.height(), src.width())
    } else {
        (src.width(), src.height())
    };
    let mut dst = frame::Video::new(Pixel::YUV420P, width, height);
    for plane in 0..3 {
        let src_plane = Plane {
            width: src.plane_width(plane) as usize,
            height: src.plane_height(plane) as usize,
            stride: src.stride(plane),
        };
        let dst_stride = dst.stride(plane);
        rotate_plane(
            src.data(plane),
            src_plane,
            dst.data_mut(plane),
            dst_stride,
            rotation,
        );
    }
    dst
}

/// Geometry of one source plane.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plane {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) stride: usize,
}

/// Side of the square tiles the copy walks, so both planes stay in cache.
const TILE: usize = 64;

/// Writes `src` rotated clockwise by `rotation` into `dst` (row pitch `dst_stride`).
pub(crate) fn rotate_plane(
    src: &[u8],
    plane: Plane,
    dst: &mut [u8],
    dst_stride: usize,
    rotation: Rotation,
) {
    let Plane {
        width: w,
        height: h,
        stride,
    } = plane;
    let (dst_w, dst_h) = if rotation.swaps_axes() {
        (h, w)
    } else {
        (w, h)
    };
    // For each destination pixel (x, y), the source (column, row) it comes from.
    let source = |x: usize, y: usize| -> (usize, usize) {
        match rotation {
            Rotation::None => (x, y),
            Rotation::Clockwise90 => (y, h - 1 - x),
            Rotation::Half => (w - 1 - x, h - 1 - y),
            Rotation::Clockwise270 => (w - 1 - y, x),
        }
    };
    for tile_y in (0..dst_h).step_by(TILE) {
        for tile_x in (0..dst_w).step_by(TILE) {
            for y in tile_y..(tile_y + TILE).min(dst_h) {
                let row = &mut dst[y * dst_stride..y * dst_stride + dst_w];
                for (x, out) in row.iter_mut().enumerate().skip(tile_x).take(TILE) {
                    let (col, src_row) = source(x, y);
                    *out = src[src_row * stride + col];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3x2 plane with stride 4 (one padding byte per row):
    /// 1 2 3
    /// 4 5 6
    const SRC: [u8; 8] = [1, 2, 3, 0, 4, 5, 6, 0];
    const PLANE: Plane = Plane {
        width: 3,
        height: 2,
        stride: 4,
    };

    fn rotated(rotation: Rotation, dst_stride: usize) -> Vec<u8> {
        let mut dst = vec![0u8; dst_stride * 3];
        rotate_plane(&SRC, PLANE, &mut dst, dst_stride, rotation);
        dst
    }

    #[test]
    fn clockwise_quarter_turn() {
        // 4 1
        // 5 2
        // 6 3
        assert_eq!(rotated(Rotation::Clockwise90, 2), [4, 1, 5, 2, 6, 3]);
    }

    #[test]
    fn counter_clockwise_quarter_turn() {
        // 3 6
        // 2 5
        // 1 4
        assert_eq!(rotated(Rotation::Clockwise270, 2), [3, 6, 2, 5, 1, 4]);
    }

    #[test]
    fn half_turn_respects_strides() {
        let out = rotated(Rotation::Half, 4);
        assert_eq!(&out[..3], &[6, 5, 4]);
        assert_eq!(&out[4..7], &[3, 2, 1]);
    }

    fn matrix_bytes(matrix: [i32; 9]) -> Vec<u8> {
        matrix.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    #[test]
    fn reads_display_matrices_like_ffmpeg() {
        const ONE: i32 = 1 << 16;
        const W: i32 = 1 << 30;
        // What ffprobe reports as "rotation of 90.00 degrees" (counter-clockwise):
        // the ffmpeg CLI shows it with transpose=cclock, a clockwise 270 turn.
        let ccw90 = matrix_bytes([0, -ONE, 0, ONE, 0, 0, 0, 0, W]);
        assert_eq!(
            Rotation::from_display_matrix(&ccw90),
            Rotation::Clockwise270
        );
        let cw90 = matrix_bytes([0, ONE, 0, -ONE, 0, 0, 0, 0, W]);
        assert_eq!(Rotation::from_display_matrix(&cw90), Rotation::Clockwise90);
        let half = matrix_bytes([-ONE, 0, 0, 0, -ONE, 0, 0, 0, W]);
        assert_eq!(Rotation::from_display_matrix(&half), Rotation::Half);
        let identity = matrix_bytes([ONE, 0, 0, 0, ONE, 0, 0, 0, W]);
        assert_eq!(Rotation::from_display_matrix(&identity), Rotation::None);
        assert_eq!(Rotation::from_display_matrix(&[0; 36]), Rotation::None);
        assert_eq!(Rotation::from_display_matrix(&[1, 2, 3]), Rotation::None);
    }

    #[test]
    fn snaps_degrees() {
        assert_eq!(
            Rotation::from_clockwise_degrees(-90.0),
            Rotation::Clockwise270
        );
        assert_eq!(
            Rotation::from_clockwise_degrees(450.0),
            Rotation::Clockwise90
        );
        assert_eq!(Rotation::from_clockwise_degrees(f64::NAN), Rotation::None);
    }
}
