//! Pretrained weights through the Hugging Face cache, downloaded from a local HTTP server that
//! answers as the hub does (these machines have no internet), into a fresh cache per test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use burn::tensor::{Device, Distribution, Tensor};
use repvgg_deploy::{
    DeployError, Form, PretrainedEval, PretrainedOptions, download_pretrained, pretrained_with,
    read_checkpoint, write_checkpoint,
};
use repvgg_model::{RepVggArch, Weights};
use repvgg_testing::{
    HF_CACHE_COMMIT, place_in_hf_cache, random_training_model, relative_difference, scratch,
};

const A0_REPO: &str = "timm/repvgg_a0.rvgg_in1k";
const A0_PATH: &str = "/timm/repvgg_a0.rvgg_in1k/resolve/main/model.safetensors";
/// The commit the test hub serves.
const SERVED_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// A full RepVGG-A0 training-time checkpoint (random weights and BN statistics), as a
/// safetensors file in the reference naming, which the readers accept like timm's.
fn a0_checkpoint() -> Arc<Vec<u8>> {
    static BYTES: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    BYTES
        .get_or_init(|| {
            let config = RepVggArch::A0.config();
            let model = random_training_model(&config, &Device::flex());
            let weights = Weights::from_module(&model).unwrap();
            let dir = scratch("pretrained-fixture");
            let path = dir.path().join("a0.safetensors");
            write_checkpoint(&weights, &config, None, &path).unwrap();
            Arc::new(std::fs::read(&path).unwrap())
        })
        .clone()
}

/// What the server answers.
#[derive(Clone)]
enum Reply {
    /// The file, with the headers the hub sends (`X-Repo-Commit`, `ETag`, `Content-Range` for
    /// ranges).
    File(Arc<Vec<u8>>),
    /// 404 to everything.
    NotFound,
    /// The file's metadata as `File` answers it, but the transfer announces the whole file and
    /// sends only its first `sent` bytes before closing.
    Truncated { body: Arc<Vec<u8>>, sent: usize },
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Request {
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

impl Request {
    /// Whether it asked for the file's metadata (its first byte) rather than the file.
    fn is_metadata(&self) -> bool {
        self.range.as_deref() == Some("bytes=0-0")
    }
}

/// A one-thread HTTP/1.1 server on 127.0.0.1 that records the requests it gets.
struct Server {
    endpoint: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(request) = read_request(&mut stream) else {
                    continue;
                };
                seen.lock().unwrap().push(request.clone());
                let _ = respond(&mut stream, &reply, &request);
            }
        });
        Self { endpoint, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests for the file itself (not its metadata).
    fn downloads(&self) -> usize {
        self.requests().iter().filter(|r| !r.is_metadata()).count()
    }

    fn options(&self, cache_dir: &Path) -> PretrainedOptions {
        PretrainedOptions {
            endpoint: self.endpoint.clone(),
            cache_dir: cache_dir.to_path_buf(),
            token: None,
            offline: false,
        }
    }
}

/// Reads a request's head: its path and the headers the tests look at.
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    Some(Request {
        path: head.split_whitespace().nth(1)?.to_string(),
        range: header("range"),
        authorization: header("authorization"),
    })
}

fn respond(stream: &mut TcpStream, reply: &Reply, request: &Request) -> std::io::Result<()> {
    let (body, truncated_to) = match reply {
        Reply::NotFound => {
            write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 15\r\nConnection: close\r\n\r\n\
                 Entry not found"
            )?;
            return stream.flush();
        }
        Reply::File(body) => (body, None),
        Reply::Truncated { body, sent } => (body, Some(*sent)),
    };
    let start: usize = request
        .range
        .as_deref()
        .and_then(|range| range.strip_prefix("bytes="))
        .and_then(|range| range.split('-').next())
        .and_then(|start| start.parse().ok())
        .unwrap_or(0);
    let end = match request.is_metadata() {
        true => 1,
        false => body.len(),
    };
    let sent = match (request.is_metadata(), truncated_to) {
        (false, Some(sent)) => sent.max(start),
        _ => end,
    };
    write!(
        stream,
        "HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\n\
         X-Repo-Commit: {SERVED_COMMIT}\r\nETag: \"{}\"\r\n\
         Content-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        etag(body),
        end - 1,
        body.len(),
        end - start
    )?;
    stream.write_all(&body[start..sent])?;
    stream.flush()
}

/// A stand-in for the hub's content hash: FNV-1a, as 64 hex digits.
fn etag(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}").repeat(4)
}

/// Every file under `dir`, as paths relative to it (none when it does not exist).
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The files under `dir` that hold data: not the `.lock` files `hf-hub` leaves beside blobs
/// (as Python leaves them in `.locks`).
fn data_files(dir: &Path) -> Vec<String> {
    files_under(dir)
        .into_iter()
        .filter(|file| !file.ends_with(".lock"))
        .collect()
}

/// An address where nothing listens (a port that was free a moment ago).
fn nowhere() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

#[test]
fn downloads_once_into_the_hugging_face_cache_then_uses_it() {
    let bytes = a0_checkpoint();
    let server = Server::start(Reply::File(bytes.clone()));
    let scratch = scratch("pretrained-success");
    let cache = scratch.path();
    let options = server.options(cache);
    assert_eq!(options.cached(RepVggArch::A0).unwrap(), None);

    let path = download_pretrained(RepVggArch::A0, &options).unwrap();
    let repo = cache.join("models--timm--repvgg_a0.rvgg_in1k");
    assert_eq!(
        path,
        repo.join("snapshots")
            .join(SERVED_COMMIT)
            .join("model.safetensors")
    );
    assert_eq!(options.cached(RepVggArch::A0).unwrap(), Some(path.clone()));
    assert_eq!(std::fs::read(&path).unwrap(), *bytes);
    // The layout Python's huggingface_hub reads: the ref, the blob named by the hash, and the
    // snapshot entry a relative link to it.
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        SERVED_COMMIT
    );
    let blob = format!("blobs/{}", etag(&bytes));
    assert_eq!(
        std::fs::read_link(&path).unwrap(),
        PathBuf::from("../..").join(&blob)
    );
    assert_eq!(
        data_files(&repo),
        vec![
            blob,
            "refs/main".to_string(),
            format!("snapshots/{SERVED_COMMIT}/model.safetensors")
        ]
    );
    assert_eq!(server.downloads(), 1);
    assert!(server.requests().iter().all(|r| r.path == A0_PATH));
    assert!(server.requests().iter().all(|r| r.authorization.is_none()));
    assert_eq!(read_checkpoint(&path).unwrap().form, Form::Training);

    let requests = server.requests().len();
    let again = download_pretrained(RepVggArch::A0, &options).unwrap();
    assert_eq!(again, path);
    assert_eq!(server.requests().len(), requests, "the cached file is used");
}

#[test]
fn a_file_python_put_in_the_cache_is_used_without_network() {
    let scratch = scratch("pretrained-python-cache");
    let cache = scratch.path();
    let entry = place_in_hf_cache(cache, A0_REPO, "model.safetensors", &a0_checkpoint());
    for offline in [false, true] {
        let options = PretrainedOptions {
            endpoint: nowhere(),
            cache_dir: cache.to_path_buf(),
            token: None,
            offline,
        };
        assert_eq!(
            download_pretrained(RepVggArch::A0, &options).unwrap(),
            entry
        );
        let model = pretrained_with(RepVggArch::A0, Form::Deploy, &Device::flex(), &options);
        assert_eq!(model.unwrap().form(), Form::Deploy);
    }
    assert!(entry.to_string_lossy().contains(HF_CACHE_COMMIT));
}

#[test]
fn offline_without_a_cached_file_fails_at_once_naming_the_file_and_the_variable() {
    let server = Server::start(Reply::File(a0_checkpoint()));
    let scratch = scratch("pretrained-offline");
    let cache = scratch.path();
    let options = PretrainedOptions {
        offline: true,
        ..server.options(cache)
    };
    let message = download_pretrained(RepVggArch::A0, &options)
        .unwrap_err()
        .to_string();
    for expected in [
        "HF_HUB_OFFLINE",
        "model.safetensors",
        A0_REPO,
        &cache.display().to_string(),
    ] {
        assert!(message.contains(expected), "{expected}: {message}");
    }
    assert!(server.requests().is_empty());
    assert!(files_under(cache).is_empty(), "{:?}", files_under(cache));
}

#[test]
fn the_token_is_sent_when_there_is_one() {
    let server = Server::start(Reply::File(a0_checkpoint()));
    let scratch = scratch("pretrained-token");
    let options = PretrainedOptions {
        token: Some("hf_test_token".into()),
        ..server.options(scratch.path())
    };
    download_pretrained(RepVggArch::A0, &options).unwrap();
    let requests = server.requests();
    assert!(!requests.is_empty());
    for request in requests {
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer hf_test_token")
        );
    }
}

#[test]
fn a_missing_file_is_an_error_naming_the_status_and_url() {
    let server = Server::start(Reply::NotFound);
    let scratch = scratch("pretrained-not-found");
    let cache = scratch.path();
    let err = download_pretrained(RepVggArch::B1g4, &server.options(cache)).unwrap_err();
    let message = err.to_string();
    let url = format!(
        "{}/timm/repvgg_b1g4.rvgg_in1k/resolve/main/model.safetensors",
        server.endpoint
    );
    assert!(matches!(err, DeployError::Download { .. }), "{message}");
    assert!(message.contains("HTTP 404"), "{message}");
    assert!(message.contains(&url), "{message}");
    assert!(data_files(cache).is_empty(), "{:?}", files_under(cache));
}

#[test]
fn an_interrupted_download_is_an_error_and_leaves_nothing() {
    let body = a0_checkpoint();
    let sent = body.len() / 3;
    let server = Server::start(Reply::Truncated {
        body: body.clone(),
        sent,
    });
    let scratch = scratch("pretrained-interrupted");
    let cache = scratch.path();
    let err = download_pretrained(RepVggArch::A0, &server.options(cache)).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("interrupted"), "{message}");
    assert!(
        message.contains(&format!("of {} bytes", body.len())),
        "{message}"
    );
    assert!(message.contains(A0_PATH), "{message}");
    assert!(data_files(cache).is_empty(), "{:?}", files_under(cache));
}

/// Deterministic bytes that are no safetensors file.
fn garbage(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

#[test]
fn a_corrupt_download_is_an_error_and_is_not_cached() {
    let server = Server::start(Reply::File(Arc::new(garbage(1 << 20))));
    let scratch = scratch("pretrained-corrupt");
    let cache = scratch.path();
    let err = download_pretrained(RepVggArch::A0, &server.options(cache)).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("not a valid RepVGG-A0 checkpoint"),
        "{message}"
    );
    assert!(
        data_files(cache)
            .iter()
            .all(|file| file.starts_with("models--timm--repvgg_a0.rvgg_in1k/refs")),
        "{:?}",
        files_under(cache)
    );
}

#[test]
fn weights_of_another_architecture_are_rejected() {
    let server = Server::start(Reply::File(a0_checkpoint()));
    let scratch = scratch("pretrained-wrong-arch");
    let cache = scratch.path();
    let err = download_pretrained(RepVggArch::A1, &server.options(cache)).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("not a valid RepVGG-A1 checkpoint"),
        "{message}"
    );
    assert!(message.contains("wrong shape"), "{message}");
    assert_eq!(server.options(cache).cached(RepVggArch::A1).unwrap(), None);
}

#[test]
fn a_corrupt_cached_file_is_downloaded_again_unless_offline() {
    let bytes = a0_checkpoint();
    let server = Server::start(Reply::File(bytes.clone()));
    let scratch = scratch("pretrained-corrupt-cache");
    let cache = scratch.path();
    let damaged = place_in_hf_cache(
        cache,
        A0_REPO,
        "model.safetensors",
        &bytes[..bytes.len() / 2],
    );

    let offline = PretrainedOptions {
        offline: true,
        ..server.options(cache)
    };
    let message = download_pretrained(RepVggArch::A0, &offline)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("not a valid RepVGG-A0 checkpoint"),
        "{message}"
    );
    assert!(message.contains("HF_HUB_OFFLINE"), "{message}");
    assert!(damaged.exists(), "offline, the file is left as it is");
    assert!(server.requests().is_empty());

    let path = download_pretrained(RepVggArch::A0, &server.options(cache)).unwrap();
    assert_eq!(server.downloads(), 1);
    assert_eq!(std::fs::read(&path).unwrap(), *bytes);
    assert!(!damaged.exists(), "the damaged entry and its blob are gone");
    let blobs = data_files(&cache.join("models--timm--repvgg_a0.rvgg_in1k/blobs"));
    assert_eq!(blobs, vec![etag(&bytes)]);
}

#[test]
fn an_unreachable_server_is_an_error_naming_the_url_and_the_variables() {
    let scratch = scratch("pretrained-unreachable");
    let cache = scratch.path();
    let endpoint = nowhere();
    let options = PretrainedOptions {
        endpoint: format!("{endpoint}/"),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
    };
    let message = download_pretrained(RepVggArch::A0, &options)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(&format!("{endpoint}{A0_PATH}")),
        "{message}"
    );
    assert!(message.contains("HF_HUB_OFFLINE"), "{message}");
    assert!(message.contains("HF_ENDPOINT"), "{message}");
    assert!(files_under(cache).is_empty(), "{:?}", files_under(cache));
}

#[test]
fn g2_variants_have_no_pretrained_weights() {
    let server = Server::start(Reply::NotFound);
    let scratch = scratch("pretrained-g2");
    let cache = scratch.path();
    for arch in [RepVggArch::B1g2, RepVggArch::B2g2, RepVggArch::B3g2] {
        let err = download_pretrained(arch, &server.options(cache)).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, DeployError::NoPretrained { .. }), "{message}");
        assert!(message.contains(&arch.to_string()), "{message}");
        for available in ["A0", "B1g4", "B3g4", "D2se"] {
            assert!(message.contains(available), "{message}");
        }
        assert!(PretrainedEval::of(arch).is_err());
    }
    assert!(server.requests().is_empty());
    assert_eq!(
        server.options(cache).url(RepVggArch::D2se).unwrap(),
        format!(
            "{}/timm/repvgg_d2se.rvgg_in1k/resolve/main/model.safetensors",
            server.endpoint
        )
    );
}

#[test]
fn the_weights_carry_timms_evaluation_setup() {
    let d2se = PretrainedEval::of(RepVggArch::D2se).unwrap();
    assert_eq!((d2se.input_size, d2se.crop_pct), (320, 1.0));
    for arch in [RepVggArch::A0, RepVggArch::B1g4, RepVggArch::B3] {
        let eval = PretrainedEval::of(arch).unwrap();
        assert_eq!((eval.input_size, eval.crop_pct), (224, 0.875));
        assert_eq!(eval.interpolation, "bilinear");
    }
}

#[test]
fn the_deploy_form_computes_what_the_training_form_does() {
    let server = Server::start(Reply::File(a0_checkpoint()));
    let scratch = scratch("pretrained-forms");
    let cache = scratch.path();
    let options = server.options(cache);
    let device = Device::flex();

    let training = pretrained_with(RepVggArch::A0, Form::Training, &device, &options).unwrap();
    let deploy = pretrained_with(RepVggArch::A0, Form::Deploy, &device, &options).unwrap();
    assert_eq!(
        server.downloads(),
        1,
        "the second model comes from the cache"
    );
    assert_eq!(training.form(), Form::Training);
    assert_eq!(deploy.form(), Form::Deploy);

    device.seed(7);
    let images = Tensor::<4>::random([1, 3, 64, 64], Distribution::Default, &device);
    let expected = training.forward(images.clone()).into_data();
    let actual = deploy.forward(images).into_data();
    assert_eq!(actual.shape().as_slice(), [1, 1000]);
    let relative = relative_difference(&actual, &expected);
    assert!(relative < 1e-4, "relative logit difference {relative}");
    assert!(training.into_training().is_some());
    assert!(deploy.into_deploy().is_ok());
}
