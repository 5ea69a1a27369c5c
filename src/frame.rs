//! Borrowed 8-bit video frames with a row stride.

use crate::{EngineError, Result};

/// Byte order of an 8-bit interleaved pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// 4 bytes per pixel: blue, green, red, alpha (OBS `VIDEO_FORMAT_BGRA`, `GS_BGRA`).
    Bgra,
    /// 4 bytes per pixel: red, green, blue, alpha (OBS `GS_RGBA`, PNG RGBA).
    Rgba,
    /// 3 bytes per pixel: red, green, blue.
    Rgb,
}

impl PixelFormat {
    /// Bytes per pixel (3 or 4).
    pub const fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Bgra | PixelFormat::Rgba => 4,
            PixelFormat::Rgb => 3,
        }
    }

    /// Byte offsets of red, green and blue inside one pixel.
    pub const fn rgb_offsets(self) -> [usize; 3] {
        match self {
            PixelFormat::Bgra => [2, 1, 0],
            PixelFormat::Rgba | PixelFormat::Rgb => [0, 1, 2],
        }
    }
}

/// A borrowed frame: `height` rows of `width` pixels, row `y` starting at byte `y * stride`.
///
/// The stride may exceed `width * bytes_per_pixel` (padded rows, e.g. a mapped OBS stage
/// surface, whose `linesize` is aligned). The buffer must hold at least
/// `(height - 1) * stride + width * bytes_per_pixel` bytes.
#[derive(Clone, Copy, Debug)]
pub struct FrameRef<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
    stride: usize,
    format: PixelFormat,
}

impl<'a> FrameRef<'a> {
    /// Wraps `data` as a frame.
    ///
    /// # Errors
    /// [`EngineError::InvalidFrame`] when the width or height is zero, the stride is shorter
    /// than a row, or the buffer is too short for the given geometry.
    pub fn new(
        data: &'a [u8],
        width: usize,
        height: usize,
        stride: usize,
        format: PixelFormat,
    ) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(EngineError::InvalidFrame(format!(
                "zero-size frame {width}x{height}"
            )));
        }
        let row = width * format.bytes_per_pixel();
        if stride < row {
            return Err(EngineError::InvalidFrame(format!(
                "stride {stride} bytes is shorter than a row of {width} pixels ({row} bytes)"
            )));
        }
        let needed = (height - 1) * stride + row;
        if data.len() < needed {
            return Err(EngineError::InvalidFrame(format!(
                "{width}x{height} frame with stride {stride} needs {needed} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self {
            data,
            width,
            height,
            stride,
            format,
        })
    }

    /// Wraps a tightly packed buffer (stride = width * bytes per pixel).
    ///
    /// # Errors
    /// As [`FrameRef::new`].
    pub fn packed(
        data: &'a [u8],
        width: usize,
        height: usize,
        format: PixelFormat,
    ) -> Result<Self> {
        Self::new(
            data,
            width,
            height,
            width * format.bytes_per_pixel(),
            format,
        )
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Bytes from one row to the next.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Pixel byte order.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// The pixels of row `y` (exactly `width * bytes_per_pixel` bytes).
    ///
    /// # Panics
    /// When `y >= height`.
    #[inline]
    pub fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.data[start..start + self.width * self.format.bytes_per_pixel()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_geometry() {
        let buf = vec![0u8; 100];
        assert!(FrameRef::new(&buf, 0, 4, 16, PixelFormat::Bgra).is_err());
        assert!(FrameRef::new(&buf, 5, 4, 16, PixelFormat::Bgra).is_err()); // stride < row
        assert!(FrameRef::new(&buf, 4, 7, 16, PixelFormat::Bgra).is_err()); // 112 > 100
        assert!(FrameRef::new(&buf, 4, 6, 16, PixelFormat::Bgra).is_ok()); // 96 <= 100
    }

    #[test]
    fn reads_channels_in_order() {
        // One BGRA pixel and one RGBA pixel holding the same colour.
        let bgra = [30u8, 20, 10, 255];
        let rgba = [10u8, 20, 30, 255];
        let rgb = |f: FrameRef<'_>| {
            let ([r, g, b], p) = (f.format().rgb_offsets(), f.row(0));
            [p[r], p[g], p[b]]
        };
        let f = FrameRef::packed(&bgra, 1, 1, PixelFormat::Bgra).unwrap();
        assert_eq!(rgb(f), [10, 20, 30]);
        let f = FrameRef::packed(&rgba, 1, 1, PixelFormat::Rgba).unwrap();
        assert_eq!(rgb(f), [10, 20, 30]);
    }
}
