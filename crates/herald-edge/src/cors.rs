//! Pages on other origins (CORS): which ones may read the edge's streams
//! (`--allowed-origins`), and the headers that tell a browser so. A leaf
//! module of pure functions over untrusted headers.
//!
//! An `EventSource` on `app.example.com` reading `push.example.com` gets
//! its events only if the answer names its origin in
//! `Access-Control-Allow-Origin`, and, when it sends cookies
//! (`withCredentials: true`), also says `Access-Control-Allow-Credentials:
//! true`. A stream asked for by a page of an origin not allowed is refused
//! before its token is even read: the browser would hide it from the page
//! anyway, and it would hold one of the user's connection slots.

use http::{HeaderMap, HeaderName, HeaderValue, Request, header};

/// The origins whose pages may read the edge's streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// None but the edge's own (the flag unset).
    #[default]
    Own,
    /// Every origin, without credentials: `*` (tokens in the query only).
    Any,
    /// These, exactly (lowercase, no default port), with credentials.
    List(Vec<String>),
}

/// Why `--allowed-origins` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error(
        "an empty entry (a stray comma?); list origins as `https://app.example.com,https://admin.example.com`"
    )]
    Empty,
    #[error(
        "`*` allows every origin and must stand alone; list origins one by one to allow cookies"
    )]
    WildcardInList,
    #[error(
        "`null` is the origin of sandboxed frames and local files, which any page can claim; it cannot be allowed"
    )]
    Null,
    #[error(
        "{origin:?}: {why}; an origin is `scheme://host[:port]`, e.g. `https://app.example.com`"
    )]
    Syntax { origin: String, why: &'static str },
}

/// What a request's `Origin` says about how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No `Origin`, or the edge's own host: not a cross-origin read.
    Local,
    /// A listed origin: named back, with credentials.
    Allowed(HeaderValue),
    /// Another origin under `*`: answered `*`, never with credentials, so
    /// the request's cookies are not read (the browser would drop the
    /// answer to a request that sent some).
    Public,
    /// An origin not allowed: no CORS headers, and no stream.
    Refused,
}

/// Request headers a preflight may ask for: `Last-Event-ID` (an
/// EventSource's reconnect), `Authorization` (a fetch-based client),
/// `Cache-Control` (some clients send `no-cache`).
const ALLOW_HEADERS: &str = "authorization, cache-control, last-event-id";
/// How long a browser may keep a preflight's answer, in seconds (Chromium
/// keeps at most 7200).
const MAX_AGE: &str = "7200";

impl AllowedOrigins {
    /// Parses `--allowed-origins`: `*`, or comma-separated origins; blank
    /// is none. Origins are lowercased and a default port dropped, as
    /// browsers send them.
    pub fn parse(spec: &str) -> Result<Self, OriginError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(Self::Own);
        }
        if spec == "*" {
            return Ok(Self::Any);
        }
        let mut list: Vec<String> = Vec::new();
        for entry in spec.split(',').map(str::trim) {
            let origin = normalize(entry)?;
            if !list.contains(&origin) {
                list.push(origin);
            }
        }
        Ok(Self::List(list))
    }

    /// The verdict on `req`'s `Origin` header.
    pub fn verdict<B>(&self, req: &Request<B>) -> Verdict {
        let mut origins = req.headers().get_all(header::ORIGIN).iter();
        let Some(origin) = origins.next() else {
            return Verdict::Local;
        };
        match self {
            Self::Any if is_own(origin, req) => Verdict::Local,
            Self::Any => Verdict::Public,
            // Two `Origin` headers are no browser's.
            _ if origins.next().is_some() => Verdict::Refused,
            Self::List(list) if list.iter().any(|o| o.as_bytes() == origin.as_bytes()) => {
                Verdict::Allowed(origin.clone())
            }
            _ if is_own(origin, req) => Verdict::Local,
            _ => Verdict::Refused,
        }
    }

    /// Adds the CORS headers of `verdict` to a response. With a list,
    /// every answer varies by `Origin`, so caches (of `/herald.js`) keep
    /// one copy per origin; with `*`, every answer says `*`, whatever the
    /// verdict, for the same reason.
    pub fn decorate(&self, verdict: &Verdict, headers: &mut HeaderMap) {
        match self {
            Self::Own => {}
            Self::Any => {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
            Self::List(_) => {
                headers.append(header::VARY, HeaderValue::from_static("origin"));
                if let Verdict::Allowed(origin) = verdict {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                    headers.insert(
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                }
            }
        }
    }
}

/// What an answer to a preflight (`OPTIONS` with an allowed `Origin`)
/// allows, besides [`AllowedOrigins::decorate`]'s headers.
pub fn preflight_headers(headers: &mut HeaderMap) {
    let pairs: [(HeaderName, &'static str); 3] = [
        (header::ACCESS_CONTROL_ALLOW_METHODS, "GET"),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS),
        (header::ACCESS_CONTROL_MAX_AGE, MAX_AGE),
    ];
    for (name, value) in pairs {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// `headers` without `Cookie`: what a request under `*` is read with.
pub fn without_cookies(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    headers.remove(header::COOKIE);
    headers
}

/// Whether `origin` names the host the request was sent to (a browser
/// may send `Origin` on a same-origin request): its authority equals the
/// `Host` header (HTTP/1.1) or the URI's authority (HTTP/2).
fn is_own<B>(origin: &HeaderValue, req: &Request<B>) -> bool {
    let Some((_, authority)) = origin.to_str().ok().and_then(|o| o.split_once("://")) else {
        return false;
    };
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok());
    host.is_some_and(|h| !h.is_empty() && h.eq_ignore_ascii_case(authority))
}

/// One configured origin as browsers serialize it, or why it is not one.
fn normalize(entry: &str) -> Result<String, OriginError> {
    let bad = |why| OriginError::Syntax {
        origin: entry.to_owned(),
        why,
    };
    match entry {
        "" => return Err(OriginError::Empty),
        "*" => return Err(OriginError::WildcardInList),
        e if e.eq_ignore_ascii_case("null") => return Err(OriginError::Null),
        _ => {}
    }
    if !entry.is_ascii() {
        return Err(bad(
            "not ASCII (write an international domain name in its xn-- form)",
        ));
    }
    let entry = entry.to_ascii_lowercase();
    let (scheme, authority) = entry.split_once("://").ok_or_else(|| bad("no `://`"))?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return Err(bad("not a URL scheme before `://`"));
    }
    if authority.contains(['/', '?', '#']) {
        return Err(bad(
            "an origin has no path, query or fragment (not even `/`)",
        ));
    }
    if authority.contains('@') {
        return Err(bad("an origin has no user name or password"));
    }
    let (host, port) = split_port(authority).map_err(bad)?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
    if !host_ok {
        return Err(bad("not a host name or IP address"));
    }
    let default = matches!((scheme, port), ("http", Some(80)) | ("https", Some(443)));
    Ok(match port {
        Some(port) if !default => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// `host[:port]`, where an IPv6 host is in brackets.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), &'static str> {
    let colon = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => i,
        _ => return Ok((authority, None)),
    };
    let (host, port) = (&authority[..colon], &authority[colon + 1..]);
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0 && port.bytes().all(|b| b.is_ascii_digit()))
        .ok_or("the port must be a number from 1 to 65535")?;
    Ok((host, Some(port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(spec: &str) -> Vec<String> {
        match AllowedOrigins::parse(spec) {
            Ok(AllowedOrigins::List(list)) => list,
            other => panic!("{spec}: {other:?}"),
        }
    }

    fn request(headers: &[(&str, &[u8])]) -> Request<()> {
        let mut builder = Request::get("/v1/events");
        for (name, value) in headers {
            builder = builder.header(*name, HeaderValue::from_bytes(value).unwrap());
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn origins_are_read_as_browsers_send_them() {
        assert_eq!(
            list(" https://App.Example.com , http://127.0.0.1:8081,https://app.example.com:443"),
            ["https://app.example.com", "http://127.0.0.1:8081"]
        );
        assert_eq!(
            list("http://[::1]:3000,capacitor://localhost,http://x:80"),
            ["http://[::1]:3000", "capacitor://localhost", "http://x"]
        );
        assert_eq!(AllowedOrigins::parse("*"), Ok(AllowedOrigins::Any));
        assert_eq!(AllowedOrigins::parse("  "), Ok(AllowedOrigins::Own));
    }

    #[test]
    fn bad_origins_are_refused_with_the_reason() {
        for (spec, want) in [
            ("https://a.example,", "empty entry"),
            ("*,https://a.example", "must stand alone"),
            ("null", "sandboxed frames"),
            ("https://app.example.com/", "no path"),
            ("https://app.example.com/app", "no path"),
            ("app.example.com", "no `://`"),
            ("https://", "not a host"),
            ("https://a b", "not a host"),
            ("https://user@a.example", "user name"),
            ("https://a.example:0", "port"),
            ("https://a.example:99999", "port"),
            ("https://a.example:+80", "port"),
            ("https://bücher.example", "xn--"),
            ("1http://a.example", "scheme"),
        ] {
            let err = AllowedOrigins::parse(spec).unwrap_err().to_string();
            assert!(err.contains(want), "{spec}: {err}");
        }
    }

    #[test]
    fn a_listed_origin_is_named_back_with_credentials() {
        let origins = AllowedOrigins::parse("https://app.example.com").unwrap();
        let req = request(&[("origin", b"https://app.example.com")]);
        let verdict = origins.verdict(&req);
        assert_eq!(
            verdict,
            Verdict::Allowed(HeaderValue::from_static("https://app.example.com"))
        );
        let mut headers = HeaderMap::new();
        origins.decorate(&verdict, &mut headers);
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(headers["access-control-allow-credentials"], "true");
        assert_eq!(headers["vary"], "origin");
    }

    #[test]
    fn other_origins_get_nothing_but_vary() {
        let origins = AllowedOrigins::parse("https://app.example.com").unwrap();
        let long = format!("https://{}.example", "a".repeat(20_000));
        for origin in [
            &b"https://evil.example"[..],
            b"https://app.example.com.evil.example",
            b"http://app.example.com",
            b"HTTPS://APP.EXAMPLE.COM",
            b"https://app.example.com/",
            b"null",
            b"",
            b"garbage \xff\xfe",
            long.as_bytes(),
        ] {
            let req = request(&[("origin", origin), ("host", b"push.example.com")]);
            let verdict = origins.verdict(&req);
            assert_eq!(verdict, Verdict::Refused, "{origin:?}");
            let mut headers = HeaderMap::new();
            origins.decorate(&verdict, &mut headers);
            assert_eq!(headers.len(), 1, "{origin:?}: {headers:?}");
            assert_eq!(headers["vary"], "origin");
        }
        let twice = request(&[
            ("origin", b"https://app.example.com"),
            ("origin", b"https://app.example.com"),
        ]);
        assert_eq!(origins.verdict(&twice), Verdict::Refused);
    }

    #[test]
    fn the_edges_own_origin_and_no_origin_are_local() {
        for origins in [
            AllowedOrigins::Own,
            AllowedOrigins::parse("https://app.example.com").unwrap(),
        ] {
            assert_eq!(origins.verdict(&request(&[])), Verdict::Local);
            let own = request(&[
                ("origin", b"https://push.example.com"),
                ("host", b"Push.Example.com"),
            ]);
            assert_eq!(origins.verdict(&own), Verdict::Local);
            let h2 = Request::get("https://push.example.com:8443/v1/events")
                .header("origin", "https://push.example.com:8443")
                .body(())
                .unwrap();
            assert_eq!(origins.verdict(&h2), Verdict::Local);
            let other_port = request(&[
                ("origin", b"https://push.example.com:8443"),
                ("host", b"push.example.com"),
            ]);
            assert_eq!(origins.verdict(&other_port), Verdict::Refused);
        }
        let mut headers = HeaderMap::new();
        AllowedOrigins::Own.decorate(&Verdict::Local, &mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn a_wildcard_answers_star_and_never_credentials() {
        let origins = AllowedOrigins::Any;
        for (req, want) in [
            (
                request(&[("origin", b"https://anyone.example")]),
                Verdict::Public,
            ),
            (request(&[("origin", b"null")]), Verdict::Public),
            (request(&[]), Verdict::Local),
            (
                request(&[
                    ("origin", b"http://push.example"),
                    ("host", b"push.example"),
                ]),
                Verdict::Local,
            ),
        ] {
            let verdict = origins.verdict(&req);
            assert_eq!(verdict, want, "{req:?}");
            let mut headers = HeaderMap::new();
            origins.decorate(&verdict, &mut headers);
            assert_eq!(headers["access-control-allow-origin"], "*");
            assert!(!headers.contains_key("access-control-allow-credentials"));
            assert!(!headers.contains_key("vary"));
        }
        let cookies = request(&[
            ("cookie", b"herald_token=t"),
            ("authorization", b"Bearer x"),
        ]);
        let read = without_cookies(cookies.headers());
        assert!(!read.contains_key("cookie"));
        assert_eq!(read["authorization"], "Bearer x");
    }

    #[test]
    fn a_preflight_allows_get_and_the_stream_headers() {
        let mut headers = HeaderMap::new();
        preflight_headers(&mut headers);
        assert_eq!(headers["access-control-allow-methods"], "GET");
        let allowed = headers["access-control-allow-headers"].to_str().unwrap();
        for name in ["last-event-id", "authorization"] {
            assert!(allowed.contains(name), "{allowed}");
        }
        assert_eq!(headers["access-control-max-age"], "7200");
    }

    proptest! {
        /// Whatever a client sends as `Origin`, only a listed origin is
        /// named back, and then exactly as listed.
        #[test]
        fn only_listed_origins_are_named_back(origin in proptest::collection::vec(any::<u8>(), 0..80)) {
            let origins = AllowedOrigins::parse("https://app.example.com,http://127.0.0.1:3000").unwrap();
            let Ok(value) = HeaderValue::from_bytes(&origin) else { return Ok(()) };
            let mut req = request(&[("host", b"push.example.com")]);
            req.headers_mut().insert("origin", value);
            let mut headers = HeaderMap::new();
            origins.decorate(&origins.verdict(&req), &mut headers);
            if let Some(named) = headers.get("access-control-allow-origin") {
                prop_assert!(["https://app.example.com", "http://127.0.0.1:3000"].contains(&named.to_str().unwrap()));
                prop_assert_eq!(named.as_bytes(), &origin[..]);
            }
        }

        /// Any flag value parses or is refused without panicking, and what
        /// parses is a list of `scheme://host[:port]`.
        #[test]
        fn any_flag_value_parses_or_is_refused(spec in "\\PC{0,60}") {
            if let Ok(AllowedOrigins::List(list)) = AllowedOrigins::parse(&spec) {
                for origin in list {
                    let (_, authority) = origin.split_once("://").unwrap();
                    prop_assert!(!authority.is_empty() && !authority.contains('/'));
                    prop_assert_eq!(origin.to_ascii_lowercase(), origin.clone());
                }
            }
        }
    }
}
