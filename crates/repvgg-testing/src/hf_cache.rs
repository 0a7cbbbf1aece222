//! Hugging Face hub caches laid out as Python's `huggingface_hub` writes them, for the tests of
//! pretrained weights.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The commit the cache entries of [`place_in_hf_cache`] belong to.
pub const HF_CACHE_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Puts `bytes` into the hub cache `cache` as `huggingface_hub` does after downloading `file`
/// of the model repository `repo` (`timm/repvgg_a0.rvgg_in1k`): the content in
/// `blobs/{sha256}`, `refs/main` naming the commit, and `snapshots/{commit}/{file}` a relative
/// link to the blob (a copy where there are no links). Returns the snapshot's path.
pub fn place_in_hf_cache(cache: &Path, repo: &str, file: &str, bytes: &[u8]) -> PathBuf {
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let hash = format!("{:x}", Sha256::digest(bytes));
    let blobs = repo_dir.join("blobs");
    let snapshot = repo_dir.join("snapshots").join(HF_CACHE_COMMIT);
    for dir in [&blobs, &snapshot, &repo_dir.join("refs")] {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(blobs.join(&hash), bytes).unwrap();
    fs::write(repo_dir.join("refs").join("main"), HF_CACHE_COMMIT).unwrap();
    let entry = snapshot.join(file);
    let _ = fs::remove_file(&entry);
    #[cfg(unix)]
    std::os::unix::fs::symlink(Path::new("../../blobs").join(&hash), &entry).unwrap();
    // Where links need privileges, `huggingface_hub` copies the blob instead.
    #[cfg(not(unix))]
    fs::write(&entry, bytes).unwrap();
    entry
}
