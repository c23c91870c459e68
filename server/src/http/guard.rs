//! Who may talk to the API: a `Host` allowlist against DNS rebinding, and
//! an `Origin` check against other sites' pages.
//!
//! DNS rebinding makes a learner's browser send requests for an attacker's
//! name to this server; they carry that name as `Host`. So `Host` must be
//! an IP literal (which no rebinding can produce), a loopback name, or the
//! host of `--public-url`. A browser request from another site's page
//! carries that site as `Origin`; the API answers only its own origin and
//! the public URL's.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AppError, AppState};

/// The names this server answers to besides IP literals and loopback.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// `host[:port]` of `--public-url`, lower case.
    public_host: Option<String>,
    /// `scheme://host[:port]` of `--public-url`.
    public_origin: Option<String>,
}

impl Allowed {
    /// From `--public-url` (e.g. `https://lab.example.org`), or loopback
    /// and IP literals only.
    pub fn new(public_url: Option<&str>) -> Result<Allowed, String> {
        let Some(url) = public_url else {
            return Ok(Allowed::default());
        };
        let url = url.trim_end_matches('/');
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| matches!(*s, "http" | "https"))
            .ok_or_else(|| {
                format!("--public-url must start with http:// or https://, not {url:?}")
            })?;
        if rest.is_empty() || rest.contains('/') {
            return Err(format!(
                "--public-url is the lab's origin (scheme://host[:port]), with no path: {url:?}"
            ));
        }
        Ok(Allowed {
            public_host: Some(rest.to_ascii_lowercase()),
            public_origin: Some(format!("{scheme}://{}", rest.to_ascii_lowercase())),
        })
    }

    /// Whether `host` (a `Host` header) names this server.
    pub fn host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        if self.public_host.as_deref() == Some(host.as_str()) {
            return true;
        }
        let name = strip_port(&host);
        name == "localhost"
            || name.ends_with(".localhost")
            || name.parse::<std::net::IpAddr>().is_ok()
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
    }

    /// Whether a request with these headers may use the API.
    fn check(&self, headers: &HeaderMap) -> Result<(), AppError> {
        // No `Host` at all is not a browser (every browser request has one).
        let host = match headers.get(header::HOST) {
            None => return Ok(()),
            Some(h) => h.to_str().unwrap_or(""),
        };
        if !self.host(host) {
            return Err(AppError::Forbidden {
                code: stacklab_api::ErrorCode::HostNotAllowed,
                message: format!("this server does not answer to the name {host:?}; start it with --public-url to add one"),
            });
        }
        let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
            return Ok(());
        };
        let origin = origin.to_ascii_lowercase();
        let own = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host.to_ascii_lowercase());
        if own || self.public_origin.as_deref() == Some(origin.as_str()) {
            return Ok(());
        }
        Err(AppError::Forbidden {
            code: stacklab_api::ErrorCode::OriginNotAllowed,
            message: format!("requests from pages on {origin} are not accepted by this lab"),
        })
    }
}

/// `host` without its port (`[v6]:port` keeps its brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The middleware.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.allowed.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn loopback_ip_literals_and_the_public_url_pass_other_names_do_not() {
        let local = Allowed::new(None).unwrap();
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:3000",
            "192.168.1.5:8080",
            "[::1]:8080",
        ] {
            assert!(local.host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "lab.example.org",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!local.host(bad), "{bad}");
        }
        let public = Allowed::new(Some("https://Lab.Example.org/")).unwrap();
        assert!(public.host("lab.example.org"));
        assert!(!public.host("lab.example.org:8443"));
        assert!(Allowed::new(Some("lab.example.org")).is_err());
        assert!(Allowed::new(Some("https://lab.example.org/path")).is_err());
    }

    #[test]
    fn a_page_of_another_site_is_refused_its_own_origin_is_not() {
        let public = Allowed::new(Some("https://lab.example.org")).unwrap();
        assert!(public.check(&headers("127.0.0.1:8080", None)).is_ok());
        assert!(public
            .check(&headers("127.0.0.1:8080", Some("http://127.0.0.1:8080")))
            .is_ok());
        assert!(public
            .check(&headers("lab.example.org", Some("https://lab.example.org")))
            .is_ok());
        assert!(public
            .check(&headers("127.0.0.1:8080", Some("https://evil.example")))
            .is_err());
        assert!(public.check(&headers("evil.example", None)).is_err());
    }
}
