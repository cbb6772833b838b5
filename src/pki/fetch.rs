//! Answers of the PKI's services from outside (OCSP responders, CRL
//! distribution points and files, time-stamping authorities), read with a
//! cap as they arrive: a declared `Content-Length` over the cap is refused
//! before any of the body is read, and a body without one (chunked, or
//! simply endless) is read until the cap and one byte more, then dropped.
//! A hostile responder costs at most the cap, never what it chooses to send.
//! Redirects are never followed: the answer must come from the address
//! configured or named by the certificate.

use std::io::Read;
use std::time::Duration;

/// Why an answer's body was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Its declared or actual size is over the cap.
    #[error("the answer is larger than {limit} bytes{}", declared.map(|d| format!(" (it declares {d})")).unwrap_or_default())]
    TooLarge { limit: usize, declared: Option<u64> },
    /// The connection failed while reading.
    #[error("reading the answer: {0}")]
    Http(#[source] reqwest::Error),
    /// The file could not be read.
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

/// An HTTP client for a PKI service: the timeouts given, no redirects.
pub fn client(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
}

/// The body of `resp`, at most `cap` bytes.
pub async fn body(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if let Some(declared) = resp.content_length() {
        if declared > cap as u64 {
            return Err(BodyError::TooLarge {
                limit: cap,
                declared: Some(declared),
            });
        }
    }
    // Reserved by what it declares (within the cap), or a little.
    let mut out = Vec::with_capacity(resp.content_length().map_or(8192, |d| d as usize));
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Http)? {
        if out.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge {
                limit: cap,
                declared: None,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The bytes of the file at `path`, at most `cap` of them (read up to one
/// more, whatever its metadata says: a FIFO or a growing file has no
/// trustworthy length).
pub fn file(path: &std::path::Path, cap: usize) -> Result<Vec<u8>, BodyError> {
    let f = std::fs::File::open(path).map_err(BodyError::Io)?;
    if let Ok(m) = f.metadata() {
        if m.is_file() && m.len() > cap as u64 {
            return Err(BodyError::TooLarge {
                limit: cap,
                declared: Some(m.len()),
            });
        }
    }
    let mut out = Vec::new();
    f.take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(BodyError::Io)?;
    if out.len() > cap {
        return Err(BodyError::TooLarge {
            limit: cap,
            declared: None,
        });
    }
    Ok(out)
}

/// What a 3xx said, for the message that refuses it.
pub fn redirected(resp: &reqwest::Response) -> Option<String> {
    if !resp.status().is_redirection() {
        return None;
    }
    let to = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("nowhere said");
    Some(format!(
        "the responder redirected to {to} (HTTP {}), which is not followed",
        resp.status().as_u16()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A server on loopback that answers every connection with `head`
    /// and then `body` (as many times as `repeat` says).
    fn serve(head: &'static str, chunk: Vec<u8>, repeat: usize) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let chunk = chunk.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(head.as_bytes());
                    for _ in 0..repeat {
                        if s.write_all(&chunk).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}/")
    }

    /// One HTTP chunk of 1 KiB.
    fn chunk1k() -> Vec<u8> {
        let mut c = b"400\r\n".to_vec();
        c.extend([b'x'; 1024]);
        c.extend(b"\r\n");
        c
    }

    async fn get(url: &str, cap: usize) -> Result<Vec<u8>, BodyError> {
        let http = client(Duration::from_secs(5)).build().unwrap();
        body(http.get(url).send().await.unwrap(), cap).await
    }

    #[tokio::test]
    async fn a_body_is_read_only_up_to_its_cap() {
        let url = serve(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
            b"hello".to_vec(),
            1,
        );
        assert_eq!(get(&url, 5).await.unwrap(), b"hello");
        let e = get(&url, 4).await.unwrap_err();
        assert!(
            matches!(
                e,
                BodyError::TooLarge {
                    limit: 4,
                    declared: Some(5)
                }
            ),
            "{e}"
        );
        // Chunked, and more than the cap: stopped at cap + 1.
        let url = serve(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            chunk1k(),
            100_000,
        );
        let e = get(&url, 10_000).await.unwrap_err();
        assert!(
            matches!(
                e,
                BodyError::TooLarge {
                    limit: 10_000,
                    declared: None
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_file_is_read_only_up_to_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 100]).unwrap();
        assert_eq!(file(&p, 100).unwrap().len(), 100);
        let e = file(&p, 99).unwrap_err();
        assert!(e.to_string().contains("larger than 99 bytes"), "{e}");
    }
}
