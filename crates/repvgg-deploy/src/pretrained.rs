//! Pretrained ImageNet weights: the RepVGG checkpoints timm publishes on the Hugging Face hub
//! (`timm/repvgg_a0.rvgg_in1k` ...), fetched with `hf-hub` into the Hugging Face cache, the one
//! Python's `huggingface_hub` (and so `timm.create_model(.., pretrained=True)`) fills: weights a
//! user already has are used without a download.
//!
//! The hub, the cache, the token and offline mode come from the variables Python reads:
//! `HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`, `HF_TOKEN` and `HF_HUB_OFFLINE`.
//!
//! A file is verified as the architecture's training-time checkpoint whenever it is used. A
//! corrupt cached file is deleted and downloaded again (unless offline); a download that stops
//! early or brings something else leaves nothing in the cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use hf_hub::api::Progress;
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, CacheRepo};
use repvgg_model::{RepVggArch, Weights, reparameterize, tensor_infos};

use crate::checkpoint::{Form, read_checkpoint};
use crate::error::DeployError;
use crate::load::LoadedModel;

/// The hub weights are fetched from unless `HF_ENDPOINT` names a mirror.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The file of each timm repository that holds the weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The architectures timm publishes ImageNet weights for (it has none for the g2 variants).
pub const PRETRAINED_ARCHS: [RepVggArch; 11] = [
    RepVggArch::A0,
    RepVggArch::A1,
    RepVggArch::A2,
    RepVggArch::B0,
    RepVggArch::B1,
    RepVggArch::B1g4,
    RepVggArch::B2,
    RepVggArch::B2g4,
    RepVggArch::B3,
    RepVggArch::B3g4,
    RepVggArch::D2se,
];

/// Files at least this large report their progress on stderr.
const PROGRESS_MIN_BYTES: usize = 4 << 20;

/// How timm evaluates an architecture's published weights (its `pretrained_cfg`): resize the
/// shorter side to `floor(input_size / crop_pct)` with `interpolation`, centre-crop
/// `input_size`, normalise with ImageNet's mean and standard deviation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PretrainedEval {
    /// Side of the square input, in pixels.
    pub input_size: u32,
    /// Fraction of the resized image the centre crop keeps.
    pub crop_pct: f64,
    /// timm's name of the resize filter.
    pub interpolation: &'static str,
}

impl PretrainedEval {
    /// The setup timm's config gives `arch`'s weights: 224 pixels, crop 0.875, bilinear, but
    /// D2se at 320 with no crop (the resolution its 83.55% top-1 is quoted at).
    pub fn of(arch: RepVggArch) -> Result<Self, DeployError> {
        hub_repo(arch)?;
        Ok(match arch {
            RepVggArch::D2se => Self {
                input_size: 320,
                crop_pct: 1.0,
                interpolation: "bilinear",
            },
            _ => Self {
                input_size: 224,
                crop_pct: 0.875,
                interpolation: "bilinear",
            },
        })
    }
}

/// Where pretrained weights come from and where they are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PretrainedOptions {
    /// The hub's address: files are fetched from
    /// `{endpoint}/timm/repvgg_{name}.rvgg_in1k/resolve/main/model.safetensors`.
    pub endpoint: String,
    /// The Hugging Face hub cache (`models--timm--repvgg_a0.rvgg_in1k/{blobs,refs,snapshots}`
    /// inside), created when missing.
    pub cache_dir: PathBuf,
    /// Sent as `Authorization: Bearer` (for a private mirror; the timm weights need none).
    pub token: Option<String>,
    /// Use the cache only: a missing file is an error instead of a download.
    pub offline: bool,
}

impl PretrainedOptions {
    /// The options the environment asks for, read as `huggingface_hub` reads them (empty
    /// variables count as unset):
    /// - the hub: `HF_ENDPOINT`, default `https://huggingface.co`;
    /// - the cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, where `HF_HOME` defaults to
    ///   `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`;
    /// - the token: `HF_TOKEN`, else the file `HF_TOKEN_PATH`, else `HF_HOME/token`;
    /// - offline mode: `HF_HUB_OFFLINE` set to 1, true, yes or on.
    pub fn from_env() -> Self {
        Self::from_variables(|name| std::env::var_os(name))
    }

    /// [`from_env`](Self::from_env) with the variables `lookup` gives.
    fn from_variables(lookup: impl Fn(&str) -> Option<std::ffi::OsString>) -> Self {
        let variable = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let text = |name: &str| variable(name).map(|value| value.to_string_lossy().into_owned());
        let hf_home = variable("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            variable("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| dirs::home_dir().map(|home| home.join(".cache")))
                .unwrap_or_else(std::env::temp_dir)
                .join("huggingface")
        });
        let cache_dir = variable("HF_HUB_CACHE")
            .or_else(|| variable("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_file = variable("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = text("HF_TOKEN").or_else(|| {
            fs::read_to_string(token_file)
                .ok()
                .map(|token| token.trim().to_string())
                .filter(|token| !token.is_empty())
        });
        let offline = text("HF_HUB_OFFLINE").is_some_and(|value| {
            ["1", "true", "yes", "on"].contains(&value.trim().to_ascii_lowercase().as_str())
        });
        Self {
            endpoint: text("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            cache_dir,
            token,
            offline,
        }
    }

    /// The address of `arch`'s weights on the hub.
    pub fn url(&self, arch: RepVggArch) -> Result<String, DeployError> {
        Ok(format!(
            "{}/{}/resolve/main/{WEIGHTS_FILE}",
            self.endpoint.trim_end_matches('/'),
            hub_repo(arch)?
        ))
    }

    /// `arch`'s weights in the cache (`snapshots/{commit}/model.safetensors` of the revision
    /// `refs/main` names), unverified; `None` when they are not there.
    pub fn cached(&self, arch: RepVggArch) -> Result<Option<PathBuf>, DeployError> {
        Ok(self.cache_repo(arch)?.get(WEIGHTS_FILE))
    }

    fn cache_repo(&self, arch: RepVggArch) -> Result<CacheRepo, DeployError> {
        Ok(Cache::new(self.cache_dir.clone()).model(hub_repo(arch)?))
    }
}

impl Default for PretrainedOptions {
    /// Same as [`PretrainedOptions::from_env`].
    fn default() -> Self {
        Self::from_env()
    }
}

/// The ImageNet-trained `arch` on `device`, in training-time or deploy-time `form`, with
/// weights from the hub and cache that [`PretrainedOptions::from_env`] names (downloaded on
/// first use, then read from the cache).
///
/// The published weights are training-time; the deploy form is their re-parameterization.
pub fn pretrained(
    arch: RepVggArch,
    form: Form,
    device: &Device,
) -> Result<LoadedModel, DeployError> {
    pretrained_with(arch, form, device, &PretrainedOptions::from_env())
}

/// [`pretrained`] with explicit options.
pub fn pretrained_with(
    arch: RepVggArch,
    form: Form,
    device: &Device,
    options: &PretrainedOptions,
) -> Result<LoadedModel, DeployError> {
    let (_, weights) = fetch(arch, options)?;
    let config = arch.config();
    match form {
        Form::Training => weights
            .load_into(
                config.init(device),
                &format!("the {arch} training-time network"),
            )
            .map(|model| LoadedModel::Training(model.into()))
            .map_err(DeployError::from),
        Form::Deploy => reparameterize(&weights, &config, device)?
            .load_into(
                config.init_deploy(device),
                &format!("the {arch} deploy-time network"),
            )
            .map(|model| LoadedModel::Deploy(model.into()))
            .map_err(DeployError::from),
    }
}

/// The path of `arch`'s training-time weights (timm naming, safetensors) in the cache,
/// downloaded first unless a valid copy is already there.
///
/// The file must hold exactly `arch`'s training-time tensors; [`crate::read_checkpoint`] reads
/// it.
pub fn download_pretrained(
    arch: RepVggArch,
    options: &PretrainedOptions,
) -> Result<PathBuf, DeployError> {
    fetch(arch, options).map(|(path, _)| path)
}

/// The cached file of `arch` and its verified weights, downloading it when it is missing or
/// corrupt (and the options allow).
fn fetch(arch: RepVggArch, options: &PretrainedOptions) -> Result<(PathBuf, Weights), DeployError> {
    let url = options.url(arch)?;
    match options.cached(arch)? {
        Some(path) => match verify(&path, arch) {
            Ok(weights) => return Ok((path, weights)),
            Err(err) if options.offline => {
                return Err(DeployError::Download {
                    url,
                    message: format!(
                        "the cached file is not a valid {arch} checkpoint ({err}), and \
                         HF_HUB_OFFLINE forbids fetching it again: delete it, or unset \
                         HF_HUB_OFFLINE"
                    ),
                });
            }
            Err(err) => {
                log::info!("{err}: downloading it again");
                remove_cached(&path)?;
            }
        },
        None if options.offline => {
            return Err(DeployError::Download {
                url,
                message: format!(
                    "HF_HUB_OFFLINE is set and {WEIGHTS_FILE} of {} is not in the Hugging Face \
                     cache {}: unset HF_HUB_OFFLINE to download it, or point HF_HUB_CACHE at a \
                     cache that holds it",
                    hub_repo(arch)?,
                    options.cache_dir.display()
                ),
            });
        }
        None => {}
    }
    let path = download(arch, options, &url)?;
    match verify(&path, arch) {
        Ok(weights) => Ok((path, weights)),
        Err(err) => {
            remove_cached(&path)?;
            Err(DeployError::Download {
                url,
                message: format!(
                    "the downloaded file is not a valid {arch} checkpoint: {}",
                    without_path(&err, &path)
                ),
            })
        }
    }
}

/// timm's repository of `arch` on the hub, e.g. `timm/repvgg_b1g4.rvgg_in1k`.
fn hub_repo(arch: RepVggArch) -> Result<String, DeployError> {
    if !PRETRAINED_ARCHS.contains(&arch) {
        return Err(DeployError::NoPretrained {
            arch: arch.to_string(),
            available: PRETRAINED_ARCHS.map(RepVggArch::name).join(", "),
        });
    }
    Ok(format!(
        "timm/repvgg_{}.rvgg_in1k",
        arch.name().to_ascii_lowercase()
    ))
}

/// Parses `path` as a checkpoint and checks it holds exactly `arch`'s training-time tensors.
fn verify(path: &Path, arch: RepVggArch) -> Result<Weights, DeployError> {
    let checkpoint = read_checkpoint(path)?;
    if checkpoint.form != Form::Training {
        return Err(DeployError::Unreadable {
            path: path.to_path_buf(),
            format: "safetensors",
            source: format!(
                "{} weights where training-time ones were expected",
                checkpoint.form
            )
            .into(),
        });
    }
    // Parameters are lazy: listing the layout allocates only the small BN statistics, on the CPU.
    let layout = tensor_infos(&arch.config().init(&Device::flex()));
    checkpoint
        .weights
        .check_layout(&layout, &format!("the {arch} training-time network"))?;
    Ok(checkpoint.weights)
}

/// Removes a cached file: the snapshot's entry and, when it is a link as the cache makes them,
/// the blob it points to.
fn remove_cached(path: &Path) -> Result<(), DeployError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DeployError::Io { path, source }
    };
    if let Ok(target) = fs::read_link(path) {
        let blob = path.parent().unwrap_or(Path::new("")).join(target);
        if blob.exists() {
            fs::remove_file(&blob).map_err(io(&blob))?;
        }
    }
    fs::remove_file(path).map_err(io(path))
}

/// `err`'s message without the `path: ` it starts with (the removed file it names).
fn without_path(err: &DeployError, path: &Path) -> String {
    let message = err.to_string();
    let prefix = format!("{}: ", path.display());
    message
        .strip_prefix(&prefix)
        .map(str::to_string)
        .unwrap_or(message)
}

/// Downloads `arch`'s weights into the cache with `hf-hub` (a blob named by its hash, the
/// snapshot entry linking to it, `refs/main`) and returns the snapshot's path. A transfer that
/// stops early leaves no blob, no `.part` file and no snapshot entry behind.
fn download(
    arch: RepVggArch,
    options: &PretrainedOptions,
    url: &str,
) -> Result<PathBuf, DeployError> {
    let failed = |message: String| DeployError::Download {
        url: url.to_string(),
        message,
    };
    let api = ApiBuilder::from_cache(Cache::new(options.cache_dir.clone()))
        .with_endpoint(options.endpoint.trim_end_matches('/').to_string())
        .with_token(options.token.clone())
        .with_progress(false)
        .with_user_agent("repvgg-burn", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|err| failed(describe(err)))?;
    // The file's hash and size first: they name its blob and its `.part` file, and tell a
    // complete transfer from a cut one.
    let metadata = api.metadata(url).map_err(|err| failed(describe(err)))?;
    let blob = options.cache_repo(arch)?.blob_path(metadata.etag());
    let partial = blob.with_extension("part");
    let progress = DownloadProgress::new(url, &options.cache_dir);
    let result = api
        .model(hub_repo(arch)?)
        .download_with_progress(WEIGHTS_FILE, progress);
    let cut = |received: u64, why: &dyn std::fmt::Display| {
        failed(format!(
            "the download was interrupted after {received} of {} bytes ({why})",
            metadata.size()
        ))
    };
    match result {
        Ok(path) => {
            let received = fs::metadata(&path).map(|file| file.len()).unwrap_or(0);
            if received != metadata.size() as u64 {
                remove_cached(&path)?;
                return Err(cut(received, &"the connection closed early"));
            }
            Ok(path)
        }
        Err(err) => {
            let received = fs::metadata(&partial).map(|file| file.len()).unwrap_or(0);
            let _ = fs::remove_file(&partial);
            Err(match err {
                ApiError::IoError(ref io) if received > 0 => cut(received, io),
                ApiError::RequestError(_) if received > 0 => cut(received, &describe(err)),
                err => failed(describe(err)),
            })
        }
    }
}

/// A message for an `hf-hub` error, with what to do about it where there is something.
fn describe(err: ApiError) -> String {
    match err {
        ApiError::RequestError(err) => match *err {
            ureq::Error::StatusCode(status) => format!("the server answered HTTP {status}"),
            err => format!(
                "{err} (without network access, set HF_HUB_OFFLINE=1 to use only the Hugging \
                 Face cache, or HF_ENDPOINT to a mirror)"
            ),
        },
        ApiError::MissingHeader(header) => {
            format!("the answer has no {header} header (is HF_ENDPOINT a Hugging Face hub?)")
        }
        ApiError::LockAcquisition(lock) => format!(
            "another process is downloading the same file (it holds {})",
            lock.display()
        ),
        err => err.to_string(),
    }
}

/// Download progress on stderr, for large files: every 10%.
struct DownloadProgress {
    url: String,
    cache_dir: PathBuf,
    size: usize,
    received: usize,
    next: usize,
    started: Instant,
}

impl DownloadProgress {
    fn new(url: &str, cache_dir: &Path) -> Self {
        Self {
            url: url.to_string(),
            cache_dir: cache_dir.to_path_buf(),
            size: 0,
            received: 0,
            next: usize::MAX,
            started: Instant::now(),
        }
    }

    fn shown(&self) -> bool {
        self.size >= PROGRESS_MIN_BYTES
    }
}

impl Progress for DownloadProgress {
    /// Called when a transfer starts (again, when `hf-hub` resumes one).
    fn init(&mut self, size: usize, _filename: &str) {
        let first = self.size == 0;
        self.size = size;
        if first && self.shown() {
            log::info!(
                "downloading {} ({}) into {}",
                self.url,
                megabytes(size),
                self.cache_dir.display()
            );
            self.next = size / 10;
        }
    }

    fn update(&mut self, bytes: usize) {
        self.received += bytes;
        if self.shown() && self.received >= self.next && self.received < self.size {
            log::info!(
                "  {:>3}% ({} of {})",
                self.received * 100 / self.size,
                megabytes(self.received),
                megabytes(self.size)
            );
            let step = (self.size / 10).max(1);
            self.next = (self.received / step + 1) * step;
        }
    }

    fn finish(&mut self) {
        if self.shown() && self.received >= self.size {
            log::info!(
                "downloaded {} in {:.1?}",
                megabytes(self.received),
                self.started.elapsed()
            );
        }
    }
}

fn megabytes(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;

    use super::*;

    fn options(variables: &[(&str, &str)]) -> PretrainedOptions {
        let variables: HashMap<String, OsString> = variables
            .iter()
            .map(|(name, value)| (name.to_string(), OsString::from(value)))
            .collect();
        PretrainedOptions::from_variables(|name| variables.get(name).cloned())
    }

    #[test]
    fn the_environment_is_read_as_huggingface_hub_reads_it() {
        let home = tempfile::tempdir().unwrap();
        let hf_home = home.path().to_str().unwrap();
        fs::write(home.path().join("token"), "hf_from_file\n").unwrap();

        let defaults = options(&[("HF_HOME", hf_home)]);
        assert_eq!(defaults.endpoint, "https://huggingface.co");
        assert_eq!(defaults.cache_dir, home.path().join("hub"));
        assert_eq!(defaults.token.as_deref(), Some("hf_from_file"));
        assert!(!defaults.offline);

        let set = options(&[
            ("HF_HOME", hf_home),
            ("HF_HUB_CACHE", "/data/hub"),
            ("HF_ENDPOINT", "https://mirror.example"),
            ("HF_TOKEN", "hf_from_variable"),
            ("HF_HUB_OFFLINE", "1"),
        ]);
        assert_eq!(set.cache_dir, PathBuf::from("/data/hub"));
        assert_eq!(set.endpoint, "https://mirror.example");
        assert_eq!(set.token.as_deref(), Some("hf_from_variable"));
        assert!(set.offline);

        let xdg = options(&[("XDG_CACHE_HOME", "/xdg"), ("HF_TOKEN_PATH", "/none")]);
        assert_eq!(xdg.cache_dir, PathBuf::from("/xdg/huggingface/hub"));
        assert_eq!(xdg.token, None);
        // Empty variables count as unset.
        let empty = options(&[("HF_HOME", hf_home), ("HF_HUB_CACHE", ""), ("HF_TOKEN", "")]);
        assert_eq!(empty.cache_dir, home.path().join("hub"));
        assert_eq!(empty.token.as_deref(), Some("hf_from_file"));
    }

    #[test]
    fn offline_mode_takes_the_values_python_takes() {
        for value in ["1", "true", "TRUE", "yes", "On"] {
            assert!(options(&[("HF_HUB_OFFLINE", value)]).offline, "{value}");
        }
        for value in ["0", "false", "no", "off", ""] {
            assert!(!options(&[("HF_HUB_OFFLINE", value)]).offline, "{value}");
        }
    }
}
