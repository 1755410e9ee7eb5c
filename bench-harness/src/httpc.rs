//! A minimal HTTP/1.1 GET client for talking to the server under test
//! (readiness, self-metrics, PromQL queries), on hyper's connection-level
//! client. One connection per request and a hard timeout on each, so a
//! wedged server costs the harness a bounded wait, never a hang.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Status code and body of a response.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// GETs `path_and_query` from `addr`, all within `timeout`.
pub async fn get(
    addr: SocketAddr,
    path_and_query: &str,
    timeout: Duration,
) -> Result<Reply, String> {
    match tokio::time::timeout(timeout, exchange(addr, path_and_query)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn exchange(addr: SocketAddr, path_and_query: &str) -> Result<Reply, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let request = Request::get(path_and_query)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"));
    let result = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.into_body().collect().await {
                Ok(body) => Ok(Reply {
                    status,
                    body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                }),
                Err(e) => Err(format!("body: {e}")),
            }
        }
        Err(e) => Err(e),
    };
    driver.abort();
    result
}

/// Percent-encodes a query-string value (everything but unreserved bytes).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql() {
        assert_eq!(encode("sum(x{a=\"b\"})"), "sum%28x%7Ba%3D%22b%22%7D%29");
        assert_eq!(encode("a b~"), "a%20b~");
    }
}
