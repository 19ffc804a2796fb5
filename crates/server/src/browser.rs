//! Protection against web pages. Open mode trusts whoever reaches the loopback address, and a page
//! the local user visits can reach it too: by a cross-site write (CSRF), or by rebinding its own DNS
//! name to 127.0.0.1 to read as well. So in open mode:
//!
//! - a write (any method but GET, HEAD, OPTIONS, TRACE) whose `Origin` is neither the server's own
//!   (the origin of the `Host` it was sent to) nor an allowed one, or that has no `Origin` but a
//!   `Sec-Fetch-Site` of `cross-site` or `same-site`, is refused with 403 `cross_site_request`;
//! - a request whose `Host` names neither the listen address, `localhost` nor an allowed host is
//!   refused with 403 `host_not_allowed`. A rebinding page's requests carry its own name, so this
//!   stops its reads as well; the port is not compared (the attacker controls the name only).
//!
//! Clients that are not browsers send no `Origin` or `Sec-Fetch-Site` and use the address they
//! were given, so they are not affected. In token mode a browser never sends the token on its own,
//! so neither check is needed: the `Host` check applies only when allowed hosts are configured,
//! and the `Origin` check not at all.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tasklane_core::Error;

use crate::error::ApiError;

/// Which browser requests the server refuses. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BrowserPolicy(Arc<Policy>);

#[derive(Debug)]
struct Policy {
    check_origin: bool,
    check_host: bool,
    listen: IpAddr,
    hosts: Vec<String>,
    origins: Vec<Origin>,
}

/// An origin reduced to what identifies it: scheme, host name and port.
#[derive(Debug, PartialEq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl BrowserPolicy {
    /// `open`: whether the server runs in open mode. `allowed_origins` are `scheme://host[:port]`;
    /// `allowed_hosts` are host names (a port, if given, is ignored).
    pub fn new(
        open: bool,
        listen: IpAddr,
        allowed_origins: &[String],
        allowed_hosts: &[String],
    ) -> Result<Self, String> {
        let origins = allowed_origins
            .iter()
            .map(|o| {
                Origin::parse(o.trim()).ok_or_else(|| {
                    format!("allowed origin {o:?} is not an origin like http://localhost:3000")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hosts = allowed_hosts
            .iter()
            .map(|h| {
                let (name, _) = split_host_port(h.trim());
                if name.is_empty() {
                    Err(format!("allowed host {h:?} is not a host name"))
                } else {
                    Ok(normalize_host(name))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BrowserPolicy(Arc::new(Policy {
            check_origin: open,
            check_host: open || !hosts.is_empty(),
            listen,
            hosts,
            origins,
        })))
    }

    fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let policy = &*self.0;
        let host = headers.get(header::HOST).map(|h| h.to_str().unwrap_or(""));
        if policy.check_host {
            if let Some(host) = host {
                if !policy.host_allowed(host) {
                    return Err(refuse(
                        "host_not_allowed",
                        format!(
                            "Host {host:?} is not an address of this server; allow it with --allowed-host"
                        ),
                    ));
                }
            }
        }
        if !policy.check_origin || method.is_safe() {
            return Ok(());
        }
        match headers.get(header::ORIGIN) {
            Some(origin) => {
                let origin = origin.to_str().unwrap_or("");
                let allowed = Origin::parse(origin).is_some_and(|o| {
                    policy.origins.contains(&o) || host.is_some_and(|h| o.is_served_at(h))
                });
                if allowed {
                    Ok(())
                } else {
                    Err(refuse(
                        "cross_site_request",
                        format!(
                            "a write from origin {origin:?} is refused; allow it with --allowed-origin"
                        ),
                    ))
                }
            }
            None => match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
                Some(site)
                    if site.eq_ignore_ascii_case("cross-site")
                        || site.eq_ignore_ascii_case("same-site") =>
                {
                    Err(refuse(
                        "cross_site_request",
                        format!("a write from another site (Sec-Fetch-Site: {site}) is refused"),
                    ))
                }
                _ => Ok(()),
            },
        }
    }
}

impl Policy {
    fn host_allowed(&self, host: &str) -> bool {
        let (name, _) = split_host_port(host);
        let name = normalize_host(name);
        name == "localhost"
            || self.hosts.contains(&name)
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip == self.listen)
    }
}

impl Origin {
    /// `scheme://host[:port]`, optionally with a trailing `/`. `null` and anything else: `None`.
    fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return None;
        }
        let (host, port) = split_host_port(authority);
        let port = match port {
            Some(p) => p.parse().ok()?,
            None => default_port(&scheme)?,
        };
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            scheme,
            host: normalize_host(host),
            port,
        })
    }

    /// Whether this origin is the one of a page served by the request's `Host`. The scheme only
    /// supplies the default port: whatever answers at that host and port is this server (or a
    /// TLS proxy in front of it).
    fn is_served_at(&self, host: &str) -> bool {
        let (name, port) = split_host_port(host);
        let port = match port {
            Some(p) => p.parse().ok(),
            None => default_port(&self.scheme),
        };
        normalize_host(name) == self.host && port == Some(self.port)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `name[:port]` or `[v6][:port]` → (name, port).
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if s.starts_with('[') {
        return match s.find(']') {
            Some(end) => (&s[..=end], s[end + 1..].strip_prefix(':')),
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (s, None),
    }
}

fn normalize_host(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn refuse(code: &'static str, message: String) -> ApiError {
    ApiError(Error::forbidden(code, message))
}

/// Middleware: refuses what the policy refuses, before authentication.
pub async fn guard(State(policy): State<BrowserPolicy>, req: Request, next: Next) -> Response {
    // Orchestrators probe by the pod's or host's address, whatever Host the policy allows, and
    // the probes answer nothing a page could use.
    if crate::health::is_probe(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    match policy.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(origins: &[&str], hosts: &[&str]) -> BrowserPolicy {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        BrowserPolicy::new(
            true,
            "127.0.0.1".parse().unwrap(),
            &owned(origins),
            &owned(hosts),
        )
        .unwrap()
    }

    fn verdict(policy: &BrowserPolicy, method: Method, headers: &[(&str, &str)]) -> &'static str {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match policy.check(&method, &map) {
            Ok(()) => "ok",
            Err(e) => e.0.code(),
        }
    }

    #[test]
    fn hosts_are_compared_by_name() {
        let p = open(&[], &["Tasks.Internal"]);
        for host in [
            "127.0.0.1:7480",
            "127.0.0.1",
            "localhost:1",
            "LOCALHOST.",
            "tasks.internal:9",
        ] {
            assert_eq!(verdict(&p, Method::GET, &[("host", host)]), "ok", "{host}");
        }
        for host in [
            "evil.example:7480",
            "127.0.0.2:7480",
            "[::1]:7480",
            "",
            "localhost.evil",
        ] {
            assert_eq!(
                verdict(&p, Method::GET, &[("host", host)]),
                "host_not_allowed",
                "{host}"
            );
        }
        let v6 = BrowserPolicy::new(true, "::1".parse().unwrap(), &[], &[]).unwrap();
        assert_eq!(verdict(&v6, Method::GET, &[("host", "[::1]:7480")]), "ok");
    }

    #[test]
    fn origins_must_be_the_served_one_or_allowed() {
        let p = open(&["https://app.example"], &[]);
        let host = ("host", "localhost:7480");
        let post = |origin: &str| verdict(&p, Method::POST, &[host, ("origin", origin)]);
        assert_eq!(post("http://localhost:7480"), "ok");
        assert_eq!(post("https://app.example:443/"), "ok");
        for origin in [
            "http://localhost:7481",
            "https://localhost",
            "http://evil.example",
            "null",
            "",
        ] {
            assert_eq!(post(origin), "cross_site_request", "{origin}");
        }
        assert_eq!(
            verdict(&p, Method::GET, &[host, ("origin", "http://evil.example")]),
            "ok"
        );
        assert_eq!(
            verdict(
                &p,
                Method::DELETE,
                &[host, ("sec-fetch-site", "cross-site")]
            ),
            "cross_site_request"
        );
        assert_eq!(
            verdict(&p, Method::POST, &[host, ("sec-fetch-site", "same-origin")]),
            "ok"
        );
        assert_eq!(verdict(&p, Method::POST, &[]), "ok");
    }

    #[test]
    fn token_mode_checks_hosts_only_when_configured() {
        let ip = "0.0.0.0".parse().unwrap();
        let none = BrowserPolicy::new(false, ip, &[], &[]).unwrap();
        let headers = [("host", "evil.example"), ("origin", "http://evil.example")];
        assert_eq!(verdict(&none, Method::POST, &headers), "ok");
        let some = BrowserPolicy::new(false, ip, &[], &["tasks.example.com".into()]).unwrap();
        assert_eq!(verdict(&some, Method::POST, &headers), "host_not_allowed");
        assert_eq!(
            verdict(
                &some,
                Method::POST,
                &[("host", "tasks.example.com"), headers[1]]
            ),
            "ok"
        );
    }

    #[test]
    fn bad_configuration_is_refused() {
        let ip = "127.0.0.1".parse().unwrap();
        assert!(BrowserPolicy::new(true, ip, &["localhost:3000".into()], &[]).is_err());
        assert!(BrowserPolicy::new(true, ip, &["http://a/b".into()], &[]).is_err());
        assert!(BrowserPolicy::new(true, ip, &[], &[":80".into()]).is_err());
    }
}
