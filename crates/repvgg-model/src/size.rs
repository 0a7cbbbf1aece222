//! The size of input images as command lines give it: `224` (a square) or `WIDTHxHEIGHT`
//! (`320x256`: 320 wide, 256 high), as image tools write sizes.

use std::fmt;
use std::str::FromStr;

/// The smallest side a RepVGG takes: five stride-2 stages leave 1x1 at 32.
pub const MIN_IMAGE_SIDE: usize = 32;

/// An input image size, at least 32x32.
///
/// ```
/// use repvgg_model::ImageSize;
///
/// let size: ImageSize = "320x256".parse()?;
/// assert_eq!((size.width, size.height), (320, 256));
/// assert_eq!("224".parse::<ImageSize>()?, ImageSize::square(224));
/// assert!("16x300".parse::<ImageSize>().is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageSize {
    pub width: usize,
    pub height: usize,
}

impl ImageSize {
    /// `side x side`.
    pub fn square(side: usize) -> Self {
        Self {
            width: side,
            height: side,
        }
    }
}

impl FromStr for ImageSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let side = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{text}` is not a size like 224 or 320x256 (WIDTHxHEIGHT)"))
        };
        let size = match text.split_once(['x', 'X']) {
            Some((width, height)) => Self {
                width: side(width)?,
                height: side(height)?,
            },
            None => Self::square(side(text)?),
        };
        if size.width < MIN_IMAGE_SIDE || size.height < MIN_IMAGE_SIDE {
            return Err(format!(
                "`{text}`: RepVGG needs at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels"
            ));
        }
        Ok(size)
    }
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}
