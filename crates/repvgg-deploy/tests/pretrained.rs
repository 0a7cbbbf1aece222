//! Pretrained weights, downloaded from a local HTTP server standing in for the Hugging Face hub
//! (these machines have no internet), into a fresh cache directory per test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use burn::tensor::{Device, Distribution, Tensor};
use repvgg_deploy::{
    DeployError, Form, PretrainedOptions, download_pretrained, pretrained_with, read_checkpoint,
    write_checkpoint,
};
use repvgg_model::{RepVggArch, Weights};
use repvgg_testing::{random_training_model, relative_difference, scratch};

const A0_PATH: &str = "/timm/repvgg_a0.rvgg_in1k/resolve/main/model.safetensors";

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

/// What the server answers every request with.
#[derive(Clone)]
enum Reply {
    /// 200 with these bytes.
    File(Arc<Vec<u8>>),
    /// 404.
    NotFound,
    /// 200 announcing the whole file's length, then only its first `sent` bytes and a close.
    Truncated { body: Arc<Vec<u8>>, sent: usize },
}

/// A one-thread HTTP/1.1 server on 127.0.0.1 that counts and records the requests it gets.
struct Server {
    base_url: String,
    requests: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (requests.clone(), paths.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(path) = read_request_path(&mut stream) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                seen.lock().unwrap().push(path);
                let _ = respond(&mut stream, &reply);
            }
        });
        Self {
            base_url,
            requests,
            paths,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn options(&self, cache_dir: &Path) -> PretrainedOptions {
        PretrainedOptions {
            base_url: self.base_url.clone(),
            cache_dir: cache_dir.to_path_buf(),
        }
    }
}

/// Reads a request's head and returns its path.
fn read_request_path(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head);
    head.split_whitespace().nth(1).map(str::to_string)
}

fn respond(stream: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    let (status, body, announced): (&str, &[u8], usize) = match reply {
        Reply::File(body) => ("200 OK", body, body.len()),
        Reply::NotFound => ("404 Not Found", b"Entry not found", 15),
        Reply::Truncated { body, sent } => ("200 OK", &body[..*sent], body.len()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {announced}\r\nConnection: close\r\n\r\n"
    )?;
    stream.write_all(body)?;
    stream.flush()
}

/// The files in `dir` (none when it does not exist).
fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn downloads_once_then_uses_the_cache() {
    let bytes = a0_checkpoint();
    let server = Server::start(Reply::File(bytes.clone()));
    let scratch = scratch("pretrained-success");
    let cache = scratch.path();
    let options = server.options(cache);

    let path = download_pretrained(RepVggArch::A0, &options).unwrap();
    assert_eq!(path, cache.join("repvgg_a0.rvgg_in1k.safetensors"));
    assert_eq!(path, options.cache_path(RepVggArch::A0).unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), *bytes);
    assert_eq!(server.requests(), 1);
    assert_eq!(*server.paths.lock().unwrap(), vec![A0_PATH.to_string()]);
    assert_eq!(
        files_in(cache),
        vec!["repvgg_a0.rvgg_in1k.safetensors".to_string()]
    );
    let checkpoint = read_checkpoint(&path).unwrap();
    assert_eq!(checkpoint.form, Form::Training);

    let again = download_pretrained(RepVggArch::A0, &options).unwrap();
    assert_eq!(again, path);
    assert_eq!(server.requests(), 1, "the cached file is used");
}

#[test]
fn a_missing_file_is_an_error_naming_the_status_and_url() {
    let server = Server::start(Reply::NotFound);
    let scratch = scratch("pretrained-not-found");
    let cache = scratch.path();
    let options = server.options(cache);
    let err = download_pretrained(RepVggArch::B1g4, &options).unwrap_err();
    let message = err.to_string();
    let url = format!(
        "{}/timm/repvgg_b1g4.rvgg_in1k/resolve/main/model.safetensors",
        server.base_url
    );
    assert!(matches!(err, DeployError::Download { .. }), "{message}");
    assert!(message.contains("404"), "{message}");
    assert!(message.contains(&url), "{message}");
    assert!(files_in(cache).is_empty(), "{:?}", files_in(cache));
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
    assert!(files_in(cache).is_empty(), "{:?}", files_in(cache));
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
    assert!(files_in(cache).is_empty(), "{:?}", files_in(cache));
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
    assert!(files_in(cache).is_empty(), "{:?}", files_in(cache));
}

#[test]
fn a_corrupt_cached_file_is_downloaded_again() {
    let bytes = a0_checkpoint();
    let server = Server::start(Reply::File(bytes.clone()));
    let scratch = scratch("pretrained-corrupt-cache");
    let cache = scratch.path();
    let options = server.options(cache);
    let cached = options.cache_path(RepVggArch::A0).unwrap();
    std::fs::write(&cached, &bytes[..bytes.len() / 2]).unwrap();

    let path = download_pretrained(RepVggArch::A0, &options).unwrap();
    assert_eq!(path, cached);
    assert_eq!(server.requests(), 1);
    assert_eq!(std::fs::read(&path).unwrap(), *bytes);
    assert_eq!(files_in(cache).len(), 1, "{:?}", files_in(cache));
}

#[test]
fn an_unreachable_server_is_an_error_naming_the_url() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scratch = scratch("pretrained-unreachable");
    let cache = scratch.path();
    let options = PretrainedOptions {
        base_url: format!("http://127.0.0.1:{port}/"),
        cache_dir: cache.to_path_buf(),
    };
    let err = download_pretrained(RepVggArch::A0, &options).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("http://127.0.0.1:{port}{A0_PATH}")),
        "{message}"
    );
    assert!(files_in(cache).is_empty(), "{:?}", files_in(cache));
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
    }
    assert_eq!(server.requests(), 0);
    let options = server.options(cache);
    assert_eq!(
        options.url(RepVggArch::D2se).unwrap(),
        format!(
            "{}/timm/repvgg_d2se.rvgg_in1k/resolve/main/model.safetensors",
            server.base_url
        )
    );
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
        server.requests(),
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
