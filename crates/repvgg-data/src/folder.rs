//! The ImageFolder layout: `ROOT/<class>/<image>`, one subdirectory per class.

use std::fs;
use std::path::{Path, PathBuf};

use crate::DataError;

/// File extensions read as images (case-insensitive), as torchvision's ImageFolder accepts.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"];

/// One labelled image file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    /// Index into [`ImageFolder::classes`].
    pub label: usize,
}

/// The images of a directory tree in ImageFolder layout. Class `i` is the `i`-th subdirectory
/// name in sorted order (as torchvision numbers them); samples are sorted by class, then path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
}

impl ImageFolder {
    /// Indexes `root`. Files without an image extension are ignored; images are not opened
    /// here (a corrupt one is reported when it is decoded).
    pub fn open(root: &Path) -> Result<Self, DataError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DataError::Io { path, source }
        };
        if !root.is_dir() {
            return Err(DataError::NotAFolder(root.to_path_buf()));
        }
        let mut classes: Vec<String> = fs::read_dir(root)
            .map_err(io_error(root))?
            .filter_map(Result::ok)
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(DataError::NoClasses(root.to_path_buf()));
        }
        let mut samples = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
                .map_err(io_error(&dir))?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_file() && has_image_extension(path))
                .collect();
            paths.sort();
            samples.extend(paths.into_iter().map(|path| Sample { path, label }));
        }
        if samples.is_empty() {
            return Err(DataError::NoImages(root.to_path_buf()));
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}
