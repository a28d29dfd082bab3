//! One shared HTTP client for archive downloads, with bounded retries.
//!
//! `file:` URLs are served from the local filesystem so that apt sources pointing at a local
//! archive work, and so tests can run the whole lock pipeline without a network.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use super::Progress;
use crate::error_chain::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url} does not exist on the mirror (HTTP 404); check the suite/component names and that the mirror carries them")]
    NotFound { url: String },
    #[error("{url}: HTTP {status} after {attempts} attempt(s)")]
    Status {
        url: String,
        status: u16,
        attempts: u32,
    },
    #[error("{url}: {message} after {attempts} attempt(s); check the network or pick another mirror with --mirror")]
    Transport {
        url: String,
        message: String,
        attempts: u32,
    },
    #[error("{url}: cannot read local file {path}: {source}")]
    File {
        url: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl FetchError {
    pub fn is_not_found(&self) -> bool {
        match self {
            FetchError::NotFound { .. } => true,
            FetchError::File { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// Timeouts and retry policy. The defaults suit a full lock; probes use shorter ones.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub connect_timeout: Duration,
    /// Upper bound for one whole request including the body.
    pub request_timeout: Duration,
    pub attempts: u32,
    /// Delay before the second attempt; doubled for each further attempt.
    pub initial_backoff: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
            attempts: 3,
            initial_backoff: Duration::from_millis(500),
        }
    }
}

pub struct Http {
    client: reqwest::blocking::Client,
    config: HttpConfig,
}

enum Attempt {
    Retry(String),
    RetryStatus(u16),
}

impl Http {
    pub fn new(config: HttpConfig) -> Result<Http, FetchError> {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("eci-build/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Client(e.to_string()))?;
        Ok(Http { client, config })
    }

    /// Downloads `url` completely. `label` is what progress output calls it.
    pub fn get(
        &self,
        url: &str,
        label: &str,
        progress: &dyn Progress,
    ) -> Result<Vec<u8>, FetchError> {
        if let Some(path) = file_url_path(url) {
            return std::fs::read(&path).map_err(|source| FetchError::File {
                url: url.to_string(),
                path,
                source,
            });
        }
        let attempts = self.config.attempts.max(1);
        let mut backoff = self.config.initial_backoff;
        let mut last = Attempt::Retry(String::new());
        for attempt in 1..=attempts {
            if attempt > 1 {
                progress.message(&format!("retrying {url} in {} ms", backoff.as_millis()));
                std::thread::sleep(backoff);
                backoff *= 2;
            }
            match self.try_get(url, label, progress) {
                Ok(body) => return Ok(body),
                Err(Ok(a)) => last = a,
                Err(Err(mut fatal)) => {
                    if let FetchError::Transport { attempts: n, .. }
                    | FetchError::Status { attempts: n, .. } = &mut fatal
                    {
                        *n = attempt;
                    }
                    return Err(fatal);
                }
            }
        }
        Err(match last {
            Attempt::Retry(message) => FetchError::Transport {
                url: url.to_string(),
                message,
                attempts,
            },
            Attempt::RetryStatus(status) => FetchError::Status {
                url: url.to_string(),
                status,
                attempts,
            },
        })
    }

    /// `Err(Ok(_))` is retryable, `Err(Err(_))` is final.
    fn try_get(
        &self,
        url: &str,
        label: &str,
        progress: &dyn Progress,
    ) -> Result<Vec<u8>, Result<Attempt, FetchError>> {
        let mut resp = match self.client.get(url).send() {
            Ok(r) => r,
            Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                return Err(Ok(Attempt::Retry(error_chain(&e))))
            }
            Err(e) => {
                return Err(Err(FetchError::Transport {
                    url: url.to_string(),
                    message: error_chain(&e),
                    attempts: 1,
                }))
            }
        };
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(Err(FetchError::NotFound {
                url: url.to_string(),
            }));
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(Ok(Attempt::RetryStatus(status.as_u16())));
        }
        if !status.is_success() {
            return Err(Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                attempts: 1,
            }));
        }
        let total = resp.content_length();
        progress.download_started(label, total);
        let mut body = Vec::with_capacity(total.unwrap_or(0).min(1 << 30) as usize);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    body.extend_from_slice(&buf[..n]);
                    progress.download_advanced(n as u64);
                }
                Err(e) => {
                    progress.download_finished(label);
                    return Err(Ok(Attempt::Retry(format!("reading the body: {e}"))));
                }
            }
        }
        progress.download_finished(label);
        Ok(body)
    }
}

/// `file:/x`, `file:///x` → `/x`; anything else → `None`.
pub fn file_url_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("file:")?;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    Some(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apt::lock::Quiet;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn file_urls() {
        assert_eq!(
            file_url_path("file:///srv/a"),
            Some(PathBuf::from("/srv/a"))
        );
        assert_eq!(file_url_path("file:/srv/a"), Some(PathBuf::from("/srv/a")));
        assert_eq!(file_url_path("http://x.example/a"), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"hello").unwrap();
        let http = Http::new(HttpConfig::default()).unwrap();
        let url = format!("file://{}/f", dir.path().display());
        assert_eq!(http.get(&url, "f", &Quiet).unwrap(), b"hello");
        let e = http
            .get(&format!("{url}-missing"), "f", &Quiet)
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    /// Serves the given raw HTTP responses in order, one per connection.
    fn serve(responses: Vec<&'static str>) -> (String, std::thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut served = 0;
            for resp in responses {
                let (mut stream, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                stream.write_all(resp.as_bytes()).unwrap();
                served += 1;
            }
            served
        });
        (format!("http://{addr}"), handle)
    }

    fn fast() -> HttpConfig {
        HttpConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            attempts: 3,
            initial_backoff: Duration::from_millis(10),
        }
    }

    #[test]
    fn retries_server_errors_then_succeeds() {
        let (base, h) = serve(vec![
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        ]);
        let http = Http::new(fast()).unwrap();
        assert_eq!(http.get(&format!("{base}/x"), "x", &Quiet).unwrap(), b"ok");
        assert_eq!(h.join().unwrap(), 3);
    }

    #[test]
    fn gives_up_after_three_attempts() {
        let r =
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let (base, h) = serve(vec![r, r, r]);
        let http = Http::new(fast()).unwrap();
        let e = http.get(&format!("{base}/x"), "x", &Quiet).unwrap_err();
        assert!(
            matches!(
                e,
                FetchError::Status {
                    status: 500,
                    attempts: 3,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(h.join().unwrap(), 3);
    }

    #[test]
    fn not_found_is_final_and_names_the_url() {
        let (base, h) = serve(vec![
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ]);
        let http = Http::new(fast()).unwrap();
        let url = format!("{base}/dists/nosuch/InRelease");
        let e = http.get(&url, "x", &Quiet).unwrap_err();
        assert!(e.is_not_found());
        assert!(e.to_string().contains(&url), "{e}");
        assert_eq!(h.join().unwrap(), 1);
    }

    #[test]
    fn connection_refused_is_retried_and_reported() {
        // Bind then drop to get a port nothing listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let http = Http::new(fast()).unwrap();
        let e = http
            .get(&format!("http://127.0.0.1:{port}/x"), "x", &Quiet)
            .unwrap_err();
        assert!(
            matches!(e, FetchError::Transport { attempts: 3, .. }),
            "{e}"
        );
    }
}
