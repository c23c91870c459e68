//! Who may talk to the API: a `Host` allowlist against DNS rebinding, and
//! an `Origin` check against other sites' pages.
//!
//! DNS rebinding makes a learner's browser send requests for an attacker's
//! name to this server; they carry that name as `Host`. So `Host` must be
//! an IP literal (which no rebinding can produce), a loopback name, or the
//! host of `--public-url`. A browser request from another site's page
//! carries that site as `Origin`; the API answers its own origin, the
//! public URL's, and the docs sites named with `--embed-origin`, which get
//! CORS headers (and are the only ones allowed to frame `/embed/…`).
//! A refusal is readable by the refused page (it carries
//! `Access-Control-Allow-Origin` for it), so an embed can say why it got
//! no demo; it tells nothing but that.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AppError, AppState};
use crate::cli::parse_origin;

/// The names this server answers to besides IP literals and loopback.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// `host[:port]` of `--public-url`, lower case.
    public_host: Option<String>,
    /// `scheme://host[:port]` of `--public-url`.
    public_origin: Option<String>,
    /// The origins of `--embed-origin`, lower case.
    embed_origins: Vec<String>,
    /// `host[:port]` of `--advertise-url`, lower case: the name the other
    /// replicas use when they hand a run over.
    advertised_host: Option<String>,
}

/// How a request that passed the check came.
#[derive(Debug, PartialEq, Eq)]
enum Access {
    /// From this lab's own pages, or not from a browser page at all.
    Own,
    /// From a page of an allowed docs site (this origin): CORS applies.
    Embed(HeaderValue),
}

impl Allowed {
    /// From `--public-url` (e.g. `https://lab.example.org`; without it,
    /// loopback and IP literals only) and the `--embed-origin`s.
    pub fn new(public_url: Option<&str>, embed_origins: &[String]) -> Result<Allowed, String> {
        let public_origin = public_url
            .map(|url| parse_origin("--public-url", url))
            .transpose()?;
        let embed_origins = embed_origins
            .iter()
            .map(|o| parse_origin("--embed-origin", o))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Allowed {
            public_host: public_origin
                .as_deref()
                .and_then(|o| o.split_once("://"))
                .map(|(_, host)| host.to_owned()),
            public_origin,
            embed_origins,
            advertised_host: None,
        })
    }

    /// These names, and the host of `url` (a replica's `--advertise-url`).
    pub fn with_host_of(mut self, url: &str) -> Result<Allowed, String> {
        let origin = parse_origin("--advertise-url", url)?;
        self.advertised_host = origin.split_once("://").map(|(_, host)| host.to_owned());
        Ok(self)
    }

    /// The `frame-ancestors` sources of `/embed/…` pages: this lab and the
    /// embed origins.
    pub fn frame_ancestors(&self) -> String {
        std::iter::once("'self'")
            .chain(self.embed_origins.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether `host` (a `Host` header) names this server.
    pub fn host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        if self.public_host.as_deref() == Some(host.as_str())
            || self.advertised_host.as_deref() == Some(host.as_str())
        {
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

    /// Whether a request with these headers may use the API, and how.
    fn check(&self, headers: &HeaderMap) -> Result<Access, AppError> {
        // No `Host` at all is not a browser (every browser request has one).
        let host = match headers.get(header::HOST) {
            None => return Ok(Access::Own),
            Some(h) => h.to_str().unwrap_or(""),
        };
        if !self.host(host) {
            return Err(AppError::Forbidden {
                code: stacklab_api::ErrorCode::HostNotAllowed,
                message: format!("this server does not answer to the name {host:?}; start it with --public-url to add one"),
            });
        }
        let Some(value) = headers.get(header::ORIGIN) else {
            return Ok(Access::Own);
        };
        let origin = value.to_str().unwrap_or("").to_ascii_lowercase();
        let own = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host.to_ascii_lowercase());
        if own || self.public_origin.as_deref() == Some(origin.as_str()) {
            return Ok(Access::Own);
        }
        if self.embed_origins.contains(&origin) {
            return Ok(Access::Embed(value.clone()));
        }
        Err(AppError::Forbidden {
            code: stacklab_api::ErrorCode::OriginNotAllowed,
            message: format!(
                "pages on {origin} may not use this lab; its operator can allow them with --embed-origin {origin}"
            ),
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

/// The middleware: checks, answers CORS preflights of embed origins, and
/// adds CORS headers for them.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.allowed.check(request.headers()) {
        Ok(Access::Own) => next.run(request).await,
        Ok(Access::Embed(origin)) if request.method() == Method::OPTIONS => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let h = response.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type, last-event-id"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            allow(&mut response, origin);
            response
        }
        Ok(Access::Embed(origin)) => {
            let mut response = next.run(request).await;
            allow(&mut response, origin);
            response
        }
        Err(e) => {
            let origin = request.headers().get(header::ORIGIN).cloned();
            let mut response = e.into_response();
            if let Some(origin) = origin {
                allow(&mut response, origin);
            }
            response
        }
    }
}

/// Lets a page of `origin` read `response` (no cookies are ever involved).
fn allow(response: &mut Response, origin: HeaderValue) {
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.append(header::VARY, HeaderValue::from_static("origin"));
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

    /// A handover carries the receiving replica's advertised name as
    /// `Host` (`replica-1:8080` in compose): refused before, so no run
    /// could be handed over there.
    #[test]
    fn a_replica_answers_to_its_advertised_name() {
        let plain = Allowed::new(Some("http://localhost:8080"), &[]).unwrap();
        assert!(!plain.host("replica-1:8080"));
        let replica = plain.with_host_of("http://Replica-1:8080").unwrap();
        assert!(replica.host("replica-1:8080"));
        assert!(!replica.host("replica-2:8080"));
        assert!(!replica.host("replica-1:8081"));
        assert!(replica.host("localhost:8080"), "the public name still");
    }

    #[test]
    fn loopback_ip_literals_and_the_public_url_pass_other_names_do_not() {
        let local = Allowed::new(None, &[]).unwrap();
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
        let public = Allowed::new(Some("https://Lab.Example.org/"), &[]).unwrap();
        assert!(public.host("lab.example.org"));
        assert!(!public.host("lab.example.org:8443"));
        assert!(Allowed::new(Some("lab.example.org"), &[]).is_err());
        assert!(Allowed::new(Some("https://lab.example.org/path"), &[]).is_err());
        assert!(Allowed::new(None, &["docs.example.org".into()]).is_err());
    }

    #[test]
    fn a_page_of_another_site_is_refused_its_own_origin_is_not() {
        let public = Allowed::new(Some("https://lab.example.org"), &[]).unwrap();
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

    #[test]
    fn an_embed_origin_gets_cors_others_a_refusal_that_names_the_flag() {
        let lab = Allowed::new(None, &["https://Docs.Example.org/".into()]).unwrap();
        assert_eq!(
            lab.check(&headers("127.0.0.1:8080", Some("https://docs.example.org")))
                .unwrap(),
            Access::Embed(HeaderValue::from_static("https://docs.example.org"))
        );
        assert_eq!(
            lab.check(&headers("127.0.0.1:8080", Some("http://127.0.0.1:8080")))
                .unwrap(),
            Access::Own
        );
        let refused = lab
            .check(&headers("127.0.0.1:8080", Some("https://other.example")))
            .unwrap_err();
        assert!(
            matches!(&refused, AppError::Forbidden { message, .. } if message.contains("--embed-origin https://other.example")),
            "{refused:?}"
        );
        assert_eq!(lab.frame_ancestors(), "'self' https://docs.example.org");
        assert_eq!(Allowed::new(None, &[]).unwrap().frame_ancestors(), "'self'");
    }
}
