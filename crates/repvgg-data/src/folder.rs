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
    /// Entries that could not be examined (a symbolic link that loops or leads nowhere, a
    /// directory that cannot be listed), with the reason: left out, not fatal.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl ImageFolder {
    /// Indexes `root`. Files without an image extension are ignored; images are not opened
    /// here (a corrupt one is reported when it is decoded). Entries that cannot be examined
    /// are listed in [`unreadable`](Self::unreadable) and logged; an error only when no class
    /// or no image is left.
    pub fn open(root: &Path) -> Result<Self, DataError> {
        if !root.is_dir() {
            return Err(DataError::NotAFolder(root.to_path_buf()));
        }
        let mut unreadable = Vec::new();
        let mut classes: Vec<String> = entries(root, &mut unreadable)
            .map_err(|source| DataError::Io {
                path: root.to_path_buf(),
                source,
            })?
            .into_iter()
            .filter(|(_, kind)| kind.is_dir())
            .filter_map(|(path, _)| Some(path.file_name()?.to_str()?.to_string()))
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(DataError::NoClasses(root.to_path_buf()));
        }
        let mut samples = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let mut paths: Vec<PathBuf> = match entries(&dir, &mut unreadable) {
                Ok(entries) => entries
                    .into_iter()
                    .filter(|(path, kind)| kind.is_file() && has_image_extension(path))
                    .map(|(path, _)| path)
                    .collect(),
                Err(err) => {
                    unreadable.push((dir, err.to_string()));
                    continue;
                }
            };
            paths.sort();
            samples.extend(paths.into_iter().map(|path| Sample { path, label }));
        }
        for (path, reason) in &unreadable {
            log::warn!("left out {}: {reason}", path.display());
        }
        if samples.is_empty() {
            return Err(DataError::NoImages(root.to_path_buf()));
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            samples,
            unreadable,
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The classes without a single image (their folders are empty or hold no image files).
    pub fn empty_classes(&self) -> Vec<&str> {
        let mut counts = vec![0usize; self.classes.len()];
        for sample in &self.samples {
            counts[sample.label] += 1;
        }
        self.classes
            .iter()
            .zip(counts)
            .filter(|(_, count)| *count == 0)
            .map(|(class, _)| class.as_str())
            .collect()
    }
}

/// The entries of `dir` with their type, symbolic links followed; entries whose type cannot be
/// read (a link that loops or dangles) go to `unreadable`.
fn entries(
    dir: &Path,
    unreadable: &mut Vec<(PathBuf, String)>,
) -> std::io::Result<Vec<(PathBuf, fs::FileType)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(err) => {
                unreadable.push((dir.to_path_buf(), err.to_string()));
                continue;
            }
        };
        match fs::metadata(&path) {
            Ok(metadata) => found.push((path, metadata.file_type())),
            Err(err) => unreadable.push((path, err.to_string())),
        }
    }
    Ok(found)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}
