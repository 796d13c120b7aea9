//! HTTP/2 by hand for tests/smuggling.rs: frames and HPACK literals built byte by byte,
//! since an h2 library refuses to send the malformed requests under test.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::Gateway;

/// HPACK: a string literal, not Huffman-coded (RFC 7541 §5.2).
pub fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// HPACK: an integer with an N-bit prefix (RFC 7541 §5.1).
pub fn hpack_int(out: &mut Vec<u8>, first: u8, bits: u32, mut n: usize) {
    let max = (1usize << bits) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// A header block of "literal without indexing, new name" fields, in the order given.
pub fn hpack_block(fields: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        out.push(0x00);
        hpack_str(&mut out, k.as_bytes());
        hpack_str(&mut out, v.as_bytes());
    }
    out
}

pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// How the gateway answered one h2 stream.
#[derive(Debug)]
pub enum H2Answer {
    /// RST_STREAM or GOAWAY with this error code (1: PROTOCOL_ERROR).
    Reset(u32),
    Response {
        status: Option<u16>,
        body: String,
    },
    Nothing,
}

/// `:status` from the first field of a response header block: an indexed static entry, or
/// a literal with the static name `:status` and a (maybe Huffman-coded) value of digits.
pub fn h2_status(block: &[u8]) -> Option<u16> {
    let mut i = 0;
    while block.get(i).is_some_and(|b| b & 0xe0 == 0x20) {
        i += 1; // a dynamic table size update
    }
    let b = *block.get(i)?;
    if b & 0x80 != 0 {
        return [200, 204, 206, 304, 400, 404, 500]
            .get(((b & 0x7f) as usize).checked_sub(8)?)
            .copied();
    }
    if !matches!(b, 0x48 | 0x08 | 0x18) {
        return None;
    }
    let len_byte = *block.get(i + 1)?;
    let value = block.get(i + 2..i + 2 + (len_byte & 0x7f) as usize)?;
    if len_byte & 0x80 == 0 {
        return std::str::from_utf8(value).ok()?.parse().ok();
    }
    // Huffman: '0'-'2' are 5-bit codes 0-2, '3'-'9' 6-bit codes 0x19-0x1f (RFC 7541 App. B).
    let bits: Vec<u8> = value
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |k| (byte >> k) & 1))
        .collect();
    let take = |at: usize, n: usize| {
        bits.get(at..at + n)
            .map(|b| b.iter().fold(0u8, |acc, &x| acc << 1 | x))
    };
    let (mut at, mut digits) = (0, String::new());
    while digits.len() < 3 {
        let v = take(at, 5)?;
        if v <= 2 {
            digits.push((b'0' + v) as char);
            at += 5;
        } else {
            let c = take(at, 6)?;
            digits.push((b'3' + c.checked_sub(0x19)?) as char);
            at += 6;
        }
    }
    digits.parse().ok()
}

/// A TLS connection to the gateway that agreed on h2 by ALPN.
pub async fn h2_connect(gw: &Gateway) -> pingora::tls::ClientTlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(gw.dir.path().join("ca.pem")).unwrap()
    {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.tls_port))
        .await
        .unwrap();
    let s = pingora::tls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    s
}

/// Opens TLS with ALPN h2, sends one request on stream 1, reads until the stream ends.
pub async fn h2_exchange(gw: &Gateway, fields: &[(&str, String)], body: Option<&[u8]>) -> H2Answer {
    let mut s = h2_connect(gw).await;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(4, 0, 0, &[]));
    let end_stream = if body.is_none() { 1 } else { 0 };
    out.extend(h2_frame(1, 4 | end_stream, 1, &hpack_block(fields)));
    if let Some(b) = body {
        out.extend(h2_frame(0, 1, 1, b));
    }
    s.write_all(&out).await.unwrap();
    let mut buf = Vec::new();
    let (mut status, mut text, mut got_headers) = (None, Vec::new(), false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 16384];
    loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match kind {
                4 if flags & 1 == 0 => s.write_all(&h2_frame(4, 1, 0, &[])).await.unwrap(),
                3 if stream == 1 => {
                    return H2Answer::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                7 if !got_headers => {
                    return H2Answer::Reset(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
                1 if stream == 1 => {
                    got_headers = true;
                    status = status.or(h2_status(&payload));
                }
                0 if stream == 1 => text.extend_from_slice(&payload),
                _ => {}
            }
            if stream == 1 && matches!(kind, 0 | 1) && flags & 1 != 0 {
                return H2Answer::Response {
                    status,
                    body: String::from_utf8_lossy(&text).into_owned(),
                };
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ if got_headers => {
                return H2Answer::Response {
                    status,
                    body: String::from_utf8_lossy(&text).into_owned(),
                };
            }
            _ => return H2Answer::Nothing,
        }
    }
}
