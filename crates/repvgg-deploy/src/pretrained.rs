//! Pretrained ImageNet weights: the RepVGG checkpoints timm publishes on the Hugging Face hub
//! (`timm/repvgg_a0.rvgg_in1k` ...), downloaded once into a local cache and verified before use.
//!
//! A file enters the cache only after it arrived whole (as many bytes as the server announced)
//! and parsed as the architecture's training-time checkpoint: it is written to a temporary file
//! in the cache directory and renamed into place. A cached file is verified again when used; a
//! corrupt one is deleted and downloaded once more.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use repvgg_model::{RepVggArch, tensor_infos};

use repvgg_model::{Weights, reparameterize};

use crate::checkpoint::{Form, read_checkpoint};
use crate::error::DeployError;
use crate::load::LoadedModel;

/// Where the weights are downloaded from unless `REPVGG_PRETRAINED_URL` says otherwise.
pub const DEFAULT_PRETRAINED_URL: &str = "https://huggingface.co";

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
const PROGRESS_MIN_BYTES: u64 = 4 << 20;
/// Without a Content-Length, progress is reported every this many bytes.
const PROGRESS_STEP_BYTES: u64 = 32 << 20;

/// Where pretrained weights come from and where they are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PretrainedOptions {
    /// The hub's address, without a trailing slash: files are fetched from
    /// `{base_url}/timm/repvgg_{name}.rvgg_in1k/resolve/main/model.safetensors`.
    pub base_url: String,
    /// The directory downloaded files are kept in (created when missing).
    pub cache_dir: PathBuf,
}

impl PretrainedOptions {
    /// The options the environment asks for: the hub `REPVGG_PRETRAINED_URL` (default
    /// `https://huggingface.co`, for mirrors and offline setups) and the cache directory
    /// `REPVGG_CACHE_DIR` (default: the user's cache directory, e.g. `~/.cache`, then
    /// `repvgg-burn`). Empty variables count as unset.
    pub fn from_env() -> Self {
        let variable = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        let base_url = variable("REPVGG_PRETRAINED_URL")
            .map(|url| url.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_PRETRAINED_URL.to_string());
        let cache_dir = variable("REPVGG_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                dirs::cache_dir()
                    .unwrap_or_else(std::env::temp_dir)
                    .join("repvgg-burn")
            });
        Self {
            base_url,
            cache_dir,
        }
    }

    /// The address of `arch`'s weights on the hub.
    pub fn url(&self, arch: RepVggArch) -> Result<String, DeployError> {
        Ok(format!(
            "{}/timm/{}/resolve/main/model.safetensors",
            self.base_url.trim_end_matches('/'),
            hub_model(arch)?
        ))
    }

    /// Where `arch`'s weights are cached: `{cache_dir}/repvgg_{name}.rvgg_in1k.safetensors`.
    pub fn cache_path(&self, arch: RepVggArch) -> Result<PathBuf, DeployError> {
        Ok(self
            .cache_dir
            .join(format!("{}.safetensors", hub_model(arch)?)))
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

/// [`pretrained`] with an explicit hub address and cache directory.
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

/// Downloads `arch`'s training-time weights (timm naming, safetensors) into
/// `options.cache_dir` unless a valid copy is already there, and returns the file's path.
///
/// The file is checked before it is kept and whenever it is used: it must be complete and hold
/// exactly `arch`'s training-time tensors. [`crate::read_checkpoint`] reads it.
pub fn download_pretrained(
    arch: RepVggArch,
    options: &PretrainedOptions,
) -> Result<PathBuf, DeployError> {
    fetch(arch, options).map(|(path, _)| path)
}

/// The cached file of `arch` and its verified weights, downloading it when it is missing or
/// corrupt.
fn fetch(arch: RepVggArch, options: &PretrainedOptions) -> Result<(PathBuf, Weights), DeployError> {
    let url = options.url(arch)?;
    let path = options.cache_path(arch)?;
    if path.exists() {
        match verify(&path, arch) {
            Ok(weights) => return Ok((path, weights)),
            Err(err) => {
                log::info!(
                    "{} is not a valid {arch} checkpoint ({}); downloading it again",
                    path.display(),
                    without_path(&err, &path)
                );
                fs::remove_file(&path).map_err(|source| DeployError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
        }
    }
    fs::create_dir_all(&options.cache_dir).map_err(|source| DeployError::Io {
        path: options.cache_dir.clone(),
        source,
    })?;
    let temporary = temporary_path(&path);
    let result = download(&url, &path, &temporary).and_then(|()| {
        let weights = verify(&temporary, arch).map_err(|err| DeployError::Download {
            url: url.clone(),
            message: format!(
                "the downloaded file is not a valid {arch} checkpoint: {}",
                without_path(&err, &temporary)
            ),
        })?;
        fs::rename(&temporary, &path).map_err(|source| DeployError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(weights)
    });
    match result {
        Ok(weights) => Ok((path, weights)),
        Err(err) => {
            let _ = fs::remove_file(&temporary);
            Err(err)
        }
    }
}

/// timm's model name of `arch` on the hub, e.g. `repvgg_b1g4.rvgg_in1k`.
fn hub_model(arch: RepVggArch) -> Result<String, DeployError> {
    if !PRETRAINED_ARCHS.contains(&arch) {
        return Err(DeployError::NoPretrained {
            arch: arch.to_string(),
            available: PRETRAINED_ARCHS.map(RepVggArch::name).join(", "),
        });
    }
    Ok(format!(
        "repvgg_{}.rvgg_in1k",
        arch.name().to_ascii_lowercase()
    ))
}

/// A fresh name beside `path` for a download in progress (one per process and call, so that
/// concurrent downloads never share one), with `path`'s extension so that it can be read.
fn temporary_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let stem = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("download");
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .unwrap_or("safetensors");
    path.with_file_name(format!(
        ".{stem}.{}.{}.part.{extension}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
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

/// `err`'s message without the `path: ` it starts with (the temporary file it names is gone).
fn without_path(err: &DeployError, path: &Path) -> String {
    let message = err.to_string();
    let prefix = format!("{}: ", path.display());
    message
        .strip_prefix(&prefix)
        .map(str::to_string)
        .unwrap_or(message)
}

/// Fetches `url` into `temporary` (flushed to disk), checking that as many bytes arrived as
/// the server announced. `path` is where the file will be kept, for messages.
fn download(url: &str, path: &Path, temporary: &Path) -> Result<(), DeployError> {
    let failed = |message: String| DeployError::Download {
        url: url.to_string(),
        message,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("repvgg-burn/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|err| {
        failed(format!(
            "{err} (without network access, place the file at {} or set REPVGG_PRETRAINED_URL \
             to a mirror)",
            path.display()
        ))
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!("the server answered HTTP {status}")));
    }
    let expected = response
        .headers()
        .get("content-length")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let mut body = response.into_body().into_reader();

    let io_error = |source| DeployError::Io {
        path: temporary.to_path_buf(),
        source,
    };
    let file = File::create(temporary).map_err(io_error)?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let mut progress = Progress::new(url, path, expected);
    let mut buffer = vec![0u8; 1 << 16];
    let mut received: u64 = 0;
    let interrupted = |received: u64, why: &dyn std::fmt::Display| {
        failed(match expected {
            Some(expected) => {
                format!("the download was interrupted after {received} of {expected} bytes ({why})")
            }
            None => format!("the download was interrupted after {received} bytes ({why})"),
        })
    };
    loop {
        let count = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(interrupted(received, &err)),
        };
        writer.write_all(&buffer[..count]).map_err(io_error)?;
        received += count as u64;
        progress.update(received);
    }
    if let Some(expected) = expected
        && received != expected
    {
        return Err(interrupted(received, &"the connection closed early"));
    }
    let file = writer
        .into_inner()
        .map_err(|err| io_error(err.into_error()))?;
    file.sync_all().map_err(io_error)?;
    progress.finish(received);
    Ok(())
}

/// Download progress on stderr, for large files: every 10% (or every 32 MB when the size is
/// unknown).
struct Progress {
    shown: bool,
    expected: Option<u64>,
    next: u64,
    started: Instant,
}

impl Progress {
    fn new(url: &str, path: &Path, expected: Option<u64>) -> Self {
        let shown = expected.is_none_or(|bytes| bytes >= PROGRESS_MIN_BYTES);
        if shown {
            let size = expected.map(|bytes| format!(" ({})", megabytes(bytes)));
            log::info!(
                "downloading {url}{} to {}",
                size.unwrap_or_default(),
                path.display()
            );
        }
        Self {
            shown,
            expected,
            next: Self::step(expected),
            started: Instant::now(),
        }
    }

    fn step(expected: Option<u64>) -> u64 {
        expected.map_or(PROGRESS_STEP_BYTES, |bytes| (bytes / 10).max(1))
    }

    fn update(&mut self, received: u64) {
        if !self.shown || received < self.next {
            return;
        }
        match self.expected {
            Some(expected) if received < expected => log::info!(
                "  {:>3}% ({} of {})",
                received * 100 / expected.max(1),
                megabytes(received),
                megabytes(expected)
            ),
            Some(_) => {}
            None => log::info!("  {}", megabytes(received)),
        }
        let step = Self::step(self.expected);
        self.next = (received / step + 1) * step;
    }

    fn finish(&self, received: u64) {
        if self.shown {
            log::info!(
                "downloaded {} in {:.1?}",
                megabytes(received),
                self.started.elapsed()
            );
        }
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
