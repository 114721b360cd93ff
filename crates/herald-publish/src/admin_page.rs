//! `GET /admin`: the operators' page (totals, topics and their audiences,
//! a user's streams, publish, Disconnect / Revoke / Follow), a plain page
//! over the HTTP API on this port. It holds no data itself: the API token
//! is typed into it and sent as a Bearer header. Its script and style are
//! served here too, so a strict Content-Security-Policy allows nothing else.

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::Full;

/// The page's paths.
pub const PATHS: [&str; 3] = ["/admin", "/admin.js", "/admin.css"];

/// Nothing but this origin's script, style and API: no inline script, no
/// frames, no forms posted elsewhere.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The asset at `path`, if it is one of [`PATHS`].
pub fn asset(path: &str) -> Option<Response<tonic::body::Body>> {
    let (body, kind) = match path {
        "/admin" => (
            include_str!("admin_page/admin.html"),
            "text/html; charset=utf-8",
        ),
        "/admin.js" => (
            include_str!("admin_page/admin.js"),
            "text/javascript; charset=utf-8",
        ),
        "/admin.css" => (
            include_str!("admin_page/admin.css"),
            "text/css; charset=utf-8",
        ),
        _ => return None,
    };
    let mut response = Response::new(tonic::body::Body::new(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(response)
}
