//! The raw upstream of tests/smuggling.rs: frames what it receives as a strict HTTP/1.1
//! server would, and records every request and every byte it could not frame.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request as the raw upstream framed it.
#[derive(Debug, Clone)]
pub struct Framed {
    pub head: String,
    pub body: Vec<u8>,
}

impl Framed {
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

#[derive(Default)]
pub struct Recorded {
    requests: Vec<Framed>,
    /// Bytes the upstream could not frame as HTTP/1.1 (or a framing it found ambiguous).
    garbage: Vec<String>,
    /// Bytes received but not yet a whole request, per open connection.
    pending: Vec<Arc<Mutex<Vec<u8>>>>,
    /// Requests cut off by the gateway closing the connection (an aborted request, which
    /// the upstream discards: harmless, unlike bytes left on a connection kept open).
    truncated: Vec<String>,
}

/// A raw TCP upstream: frames requests strictly (CRLF lines, one Content-Length or chunked,
/// never both), records them, answers each `200 OK` with a Content-Length, keeps alive.
pub struct RawUpstream {
    pub addr: std::net::SocketAddr,
    rec: Arc<Mutex<Recorded>>,
}

impl RawUpstream {
    pub async fn start() -> RawUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rec: Arc<Mutex<Recorded>> = Arc::default();
        let r = rec.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let pending: Arc<Mutex<Vec<u8>>> = Arc::default();
                r.lock().unwrap().pending.push(pending.clone());
                let r = r.clone();
                tokio::spawn(async move {
                    serve_raw(sock, r.clone(), pending.clone()).await;
                    let mut rec = r.lock().unwrap();
                    rec.pending.retain(|p| !Arc::ptr_eq(p, &pending));
                    let left = std::mem::take(&mut *pending.lock().unwrap());
                    if !left.is_empty() {
                        rec.truncated
                            .push(String::from_utf8_lossy(&left).into_owned());
                    }
                });
            }
        });
        RawUpstream { addr, rec }
    }

    /// Everything recorded since the last call (waits for in-flight bytes to settle):
    /// requests, unframable bytes, bytes pending on open connections.
    pub async fn take(&self) -> (Vec<Framed>, Vec<String>, usize) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut r = self.rec.lock().unwrap();
        let pending = r.pending.iter().map(|p| p.lock().unwrap().len()).sum();
        (
            std::mem::take(&mut r.requests),
            std::mem::take(&mut r.garbage),
            pending,
        )
    }

    /// Requests the gateway cut off by closing the connection, since the last call.
    pub fn take_truncated(&self) -> Vec<String> {
        std::mem::take(&mut self.rec.lock().unwrap().truncated)
    }
}

pub async fn serve_raw(
    mut sock: tokio::net::TcpStream,
    rec: Arc<Mutex<Recorded>>,
    pending: Arc<Mutex<Vec<u8>>>,
) {
    let mut chunk = [0u8; 16384];
    loop {
        let n = match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut answers = 0;
        {
            let mut buf = pending.lock().unwrap();
            buf.extend_from_slice(&chunk[..n]);
            loop {
                match frame(&buf) {
                    Frame::Incomplete => break,
                    Frame::Bad(why) => {
                        rec.lock()
                            .unwrap()
                            .garbage
                            .push(format!("{why}: {:?}", String::from_utf8_lossy(&buf)));
                        buf.clear();
                        break;
                    }
                    Frame::Done(req, used) => {
                        rec.lock().unwrap().requests.push(req);
                        buf.drain(..used);
                        answers += 1;
                    }
                }
            }
        }
        for _ in 0..answers {
            let reply =
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
            if sock.write_all(reply).await.is_err() {
                return;
            }
        }
    }
}

pub enum Frame {
    Incomplete,
    Bad(&'static str),
    Done(Framed, usize),
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Frames one request at the start of `buf`, as a strict HTTP/1.1 server would.
pub fn frame(buf: &[u8]) -> Frame {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Frame::Incomplete;
    };
    let head_bytes = &buf[..end];
    if head_bytes
        .iter()
        .any(|&b| (b < 0x20 && b != b'\r' && b != b'\n' && b != b'\t') || b == 0x7f)
    {
        return Frame::Bad("control bytes in the head");
    }
    let head = String::from_utf8_lossy(head_bytes).into_owned();
    if head.split("\r\n").any(|l| l.contains('\n')) {
        return Frame::Bad("bare LF in the head");
    }
    let line = head.lines().next().unwrap_or("");
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || !parts[2].starts_with("HTTP/1.") {
        return Frame::Bad("not a request line");
    }
    let req = Framed {
        head: head.clone(),
        body: Vec::new(),
    };
    let cl = req.headers("content-length");
    let te = req.headers("transfer-encoding");
    let rest = &buf[end + 4..];
    match (cl.len(), te.len()) {
        (0, 0) => Frame::Done(req, end + 4),
        (1, 0) => {
            let Ok(n) = cl[0].parse::<usize>() else {
                return Frame::Bad("Content-Length is not a number");
            };
            if rest.len() < n {
                return Frame::Incomplete;
            }
            Frame::Done(
                Framed {
                    body: rest[..n].to_vec(),
                    ..req
                },
                end + 4 + n,
            )
        }
        (0, 1) if te[0].eq_ignore_ascii_case("chunked") => {
            let mut at = 0;
            let mut body = Vec::new();
            loop {
                let Some(eol) = find(&rest[at..], b"\r\n") else {
                    return Frame::Incomplete;
                };
                let size_txt = String::from_utf8_lossy(&rest[at..at + eol]).into_owned();
                let size_txt = size_txt.split(';').next().unwrap_or("").trim().to_string();
                let Ok(size) = usize::from_str_radix(&size_txt, 16) else {
                    return Frame::Bad("bad chunk size");
                };
                at += eol + 2;
                if size == 0 {
                    // No trailers expected: the final CRLF.
                    if rest.len() < at + 2 {
                        return Frame::Incomplete;
                    }
                    if &rest[at..at + 2] != b"\r\n" {
                        return Frame::Bad("trailers or junk after the last chunk");
                    }
                    return Frame::Done(Framed { body, ..req }, end + 4 + at + 2);
                }
                if rest.len() < at + size + 2 {
                    return Frame::Incomplete;
                }
                body.extend_from_slice(&rest[at..at + size]);
                if &rest[at + size..at + size + 2] != b"\r\n" {
                    return Frame::Bad("chunk not followed by CRLF");
                }
                at += size + 2;
            }
        }
        _ => Frame::Bad(
            "ambiguous framing: several lengths, or Content-Length with Transfer-Encoding",
        ),
    }
}
