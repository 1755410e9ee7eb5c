//! Building responses the way Prometheus shapes them: the JSON envelope
//! (`{"status":"success","data":…}` / `{"status":"error","errorType":…,
//! "error":…}`), plain-text bodies, and gzip when the client accepts it.

use std::io::Write;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, VARY};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

/// The response hyper sends.
pub type HttpResponse = Response<Full<Bytes>>;

/// Content type of the API's JSON.
pub const JSON: &str = "application/json";
/// Content type of text format 0.0.4 (`/metrics`, `/federate`).
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of plain messages.
pub const PLAIN: &str = "text/plain; charset=utf-8";

/// Prometheus's API error classes, with the HTTP status each maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// 400: a parameter is malformed (including an unparsable query).
    BadData,
    /// 422: the query failed while being evaluated.
    Execution,
    /// 503: the query ran out of time.
    Timeout,
    /// 499: the client went away and the query was stopped.
    Canceled,
    /// 503: the server cannot take the request now.
    Unavailable,
    /// 500: the server failed.
    Internal,
}

impl ErrorType {
    /// The `errorType` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Timeout => "timeout",
            ErrorType::Canceled => "canceled",
            ErrorType::Unavailable => "unavailable",
            ErrorType::Internal => "internal",
        }
    }

    /// The HTTP status Prometheus answers with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Timeout | ErrorType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            // Prometheus's "client closed connection" status.
            ErrorType::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Serialize)]
struct Success<'a, T: Serialize> {
    status: &'static str,
    data: &'a T,
}

#[derive(Serialize)]
struct Failure<'a> {
    status: &'static str,
    #[serde(rename = "errorType")]
    error_type: &'static str,
    error: &'a str,
}

/// What a handler answers: status, content type, extra headers and body.
/// [`Reply::into_response`] turns it into the wire response, gzipping the
/// body when the client accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// Headers besides `Content-Type`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The uncompressed body.
    pub body: Bytes,
}

impl Reply {
    /// A reply with the given status, content type and body.
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A JSON reply written by the caller.
    pub fn json(status: StatusCode, body: String) -> Self {
        Reply::new(status, JSON, body)
    }

    /// A `204 No Content` without body or content type (Prometheus's
    /// answer when a handler has no data and no error).
    pub fn no_content() -> Self {
        Reply::new(StatusCode::NO_CONTENT, "", Bytes::new())
    }

    /// A plain-text reply.
    pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Reply::new(status, PLAIN, body)
    }

    /// A `200` with `{"status":"success","data":data}`.
    pub fn api_success<T: Serialize>(data: &T) -> Self {
        match serde_json::to_vec(&Success {
            status: "success",
            data,
        }) {
            Ok(body) => Reply::new(StatusCode::OK, JSON, body),
            Err(e) => Reply::api_error(
                ErrorType::Internal,
                &format!("error encoding response: {e}"),
            ),
        }
    }

    /// An API error with Prometheus's status code and envelope.
    pub fn api_error(kind: ErrorType, message: &str) -> Self {
        let body = serde_json::to_vec(&Failure {
            status: "error",
            error_type: kind.as_str(),
            error: message,
        })
        // Serialising two static strings and one &str cannot fail.
        .unwrap_or_default();
        Reply::new(kind.status(), JSON, body)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The wire response; the body is gzipped when `gzip` is set and the
    /// body is large enough for it to pay (128 bytes and up).
    pub fn into_response(self, gzip: bool) -> HttpResponse {
        let mut body = self.body;
        let mut compressed = false;
        if gzip && body.len() >= 128 {
            let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
            // Writing to a Vec cannot fail; on the impossible error the
            // body goes out uncompressed.
            if enc.write_all(&body).is_ok()
                && let Ok(z) = enc.finish()
            {
                body = Bytes::from(z);
                compressed = true;
            }
        }
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        if !self.content_type.is_empty() {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        }
        if compressed {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        for (k, v) in self.headers {
            h.insert(k, v);
        }
        r
    }
}

/// Whether an `Accept-Encoding` header value admits gzip (with a non-zero
/// quality).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim();
        if !coding.eq_ignore_ascii_case("gzip") && coding != "*" {
            return false;
        }
        // `q=0` means "not acceptable".
        !it.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, gzip;q=1.0, *;q=0.5"));
        assert!(accepts_gzip("GZIP"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("deflate, br"));
        assert!(accepts_gzip("*"));
    }

    #[test]
    fn gzip_round_trips() {
        use flate2::read::GzDecoder;
        use std::io::Read;
        let body = "x".repeat(10_000);
        let r = Reply::text(StatusCode::OK, body.clone()).into_response(true);
        assert_eq!(r.headers()[CONTENT_ENCODING], "gzip");
        let z = collect(r);
        let mut s = String::new();
        GzDecoder::new(&z[..]).read_to_string(&mut s).unwrap();
        assert_eq!(s, body);
        let small = Reply::text(StatusCode::OK, "ok").into_response(true);
        assert!(small.headers().get(CONTENT_ENCODING).is_none());
        let plain = Reply::text(StatusCode::OK, body.clone()).into_response(false);
        assert_eq!(collect(plain).len(), body.len());
    }

    fn collect(r: HttpResponse) -> Bytes {
        use http_body_util::BodyExt;
        let fut = r.into_body().collect();
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // A `Full` body is ready at once.
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(c)) => c.to_bytes(),
            _ => panic!("Full body not ready"),
        }
    }

    #[test]
    fn error_types_map_to_prometheus_statuses() {
        let cases = [
            (ErrorType::BadData, "bad_data", 400),
            (ErrorType::Execution, "execution", 422),
            (ErrorType::Timeout, "timeout", 503),
            (ErrorType::Canceled, "canceled", 499),
            (ErrorType::Unavailable, "unavailable", 503),
            (ErrorType::Internal, "internal", 500),
        ];
        for (t, name, code) in cases {
            assert_eq!((t.as_str(), t.status().as_u16()), (name, code));
        }
    }

    #[test]
    fn error_envelope_matches_prometheus() {
        let r = Reply::api_error(ErrorType::Internal, "invalid parameter \"query\"");
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        let body = r.body;
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"status":"error","errorType":"internal","error":"invalid parameter \"query\""}"#
        );
    }
}
