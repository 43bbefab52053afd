//! Routes: which requests the data plane accepts and where it sends them.
//!
//! A route is replicated as written by the operator; the data plane compiles the set into a
//! lookup table on every change. Validation lives here so the admin API and `apply` enforce
//! the same rules.

use serde::{Deserialize, Serialize};

use crate::ai::{validate_ai, AiSettings};
use crate::jwt::{validate_jwt, JwtSettings};
use crate::sealed::{UpstreamAuth, MAX_SEALED_BYTES};
use crate::validate::{self, FieldError};

/// Most upstream targets on one route.
pub const MAX_UPSTREAMS: usize = 64;
/// Most headers a route may add.
pub const MAX_ROUTE_HEADERS: usize = 32;
/// Longest path prefix, host or URL.
pub const MAX_ROUTE_TEXT: usize = 2048;
/// Longest per-route timeout: 10 minutes.
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// Timeout used when a route names none.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Most retries on other targets.
pub const MAX_RETRIES: u32 = 10;
/// Retries used when a route names none.
pub const DEFAULT_RETRIES: u32 = 2;
/// Largest target weight.
pub const MAX_WEIGHT: u32 = 10_000;
/// Largest priority value (0 is tried first).
pub const MAX_PRIORITY: u32 = 1_000;

/// How the data plane authenticates a route's callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteAuth {
    /// An API key in `Authorization: Bearer` or `X-API-Key`.
    ApiKey,
    /// A JSON Web Token, verified as the route's `jwt` settings say.
    Jwt,
    /// No credential; the route is public.
    None,
}

impl RouteAuth {
    /// Returns the name used by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteAuth::ApiKey => "api_key",
            RouteAuth::Jwt => "jwt",
            RouteAuth::None => "none",
        }
    }
}

/// One upstream target of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTarget {
    /// Base URL, `http://host:port[/base]`.
    pub url: String,
    /// Share of traffic inside its priority group.
    pub weight: u32,
    /// Lower groups are used first; a higher group only when every lower one is down.
    pub priority: u32,
}

/// Active health checking of a route's targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Path probed with GET; any 2xx or 3xx is healthy.
    pub path: String,
    /// Time between probes.
    pub interval_ms: u64,
}

/// A route as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub id: String,
    /// Matched on whole path segments: `/api` matches `/api` and `/api/x`, not `/apix`.
    pub path_prefix: String,
    /// Allowed methods, upper case; empty means every method.
    pub methods: Vec<String>,
    /// Exact host (without port) the route answers for; `None` matches any host.
    pub host: Option<String>,
    pub auth: RouteAuth,
    /// Token verification; present exactly when `auth` is `Jwt`.
    pub jwt: Option<JwtSettings>,
    /// A credential set on every upstream request, sealed with the master key.
    pub upstream_auth: Option<UpstreamAuth>,
    /// Makes the route an AI route: OpenAI-API endpoints served by providers.
    pub ai: Option<AiSettings>,
    /// Whether the matched prefix is removed before forwarding.
    pub strip_prefix: bool,
    pub upstreams: Vec<UpstreamTarget>,
    pub timeout_ms: u64,
    pub retries: u32,
    /// Request headers set on every forwarded request, in order.
    pub headers: Vec<(String, String)>,
    pub health_check: Option<HealthCheck>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl UpstreamTarget {
    /// A target with weight 1 in priority group 0.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            weight: 1,
            priority: 0,
        }
    }
}

impl Route {
    /// A route with the documented default for every optional field: any method and host,
    /// no prefix stripping, [`DEFAULT_TIMEOUT_MS`], [`DEFAULT_RETRIES`], no extra headers,
    /// TCP health probes.
    pub fn new(
        id: impl Into<String>,
        path_prefix: impl Into<String>,
        auth: RouteAuth,
        upstreams: Vec<UpstreamTarget>,
    ) -> Self {
        Self {
            id: id.into(),
            path_prefix: path_prefix.into(),
            methods: Vec::new(),
            host: None,
            auth,
            jwt: None,
            upstream_auth: None,
            ai: None,
            strip_prefix: false,
            upstreams,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            retries: DEFAULT_RETRIES,
            headers: Vec::new(),
            health_check: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }
}

/// Checks a route, returning every problem found.
pub fn validate_route(route: &Route) -> Vec<FieldError> {
    let mut problems = Vec::new();
    let mut check = |result: Result<(), FieldError>| {
        if let Err(problem) = result {
            problems.push(problem);
        }
    };
    check(validate::id("id", &route.id));
    check(path_prefix(&route.path_prefix));
    for (index, method) in route.methods.iter().enumerate() {
        check(self::method(index, method));
    }
    if let Some(host) = &route.host {
        check(self::host(host));
    }
    match (&route.jwt, route.auth) {
        (Some(settings), RouteAuth::Jwt) => validate_jwt(settings).into_iter().for_each(|p| check(Err(p))),
        (None, RouteAuth::Jwt) => check(Err(FieldError::new("jwt", "auth jwt needs jwt settings"))),
        (Some(_), _) => check(Err(FieldError::new(
            "jwt",
            "only routes with auth jwt take jwt settings",
        ))),
        (None, _) => {}
    }
    if let Some(ai) = &route.ai {
        validate_ai(ai).into_iter().for_each(|p| check(Err(p)));
        if !route.upstreams.is_empty() || route.upstream_auth.is_some() {
            check(Err(FieldError::new(
                "upstreams",
                "an AI route is served by its providers: no upstreams or upstream_auth",
            )));
        }
    } else if route.upstreams.is_empty() || route.upstreams.len() > MAX_UPSTREAMS {
        check(Err(FieldError::new(
            "upstreams",
            format!("must list 1 to {MAX_UPSTREAMS} targets"),
        )));
    }
    for (index, target) in route.upstreams.iter().enumerate() {
        check(upstream(index, target));
    }
    if route.timeout_ms == 0 || route.timeout_ms > MAX_TIMEOUT_MS {
        check(Err(FieldError::new(
            "timeout_ms",
            format!("must be 1 to {MAX_TIMEOUT_MS}"),
        )));
    }
    if route.retries > MAX_RETRIES {
        check(Err(FieldError::new(
            "retries",
            format!("must be at most {MAX_RETRIES}"),
        )));
    }
    if route.headers.len() > MAX_ROUTE_HEADERS {
        check(Err(FieldError::new(
            "headers",
            format!("at most {MAX_ROUTE_HEADERS} headers"),
        )));
    }
    for (name, value) in &route.headers {
        check(header(name, value));
    }
    if let Some(health) = &route.health_check {
        check(health_check(health));
    }
    if let Some(auth) = &route.upstream_auth {
        if !validate::is_header_name(&auth.header, 256) {
            check(Err(FieldError::new(
                "upstream_auth.header",
                "must be an HTTP header name",
            )));
        }
        if auth.secret.ciphertext.len() <= 16 || auth.secret.ciphertext.len() > MAX_SEALED_BYTES {
            check(Err(FieldError::new(
                "upstream_auth.secret",
                "is not a sealed secret",
            )));
        }
    }
    problems
}

fn path_prefix(value: &str) -> Result<(), FieldError> {
    let field = "path_prefix";
    if !value.starts_with('/') || value.len() > MAX_ROUTE_TEXT {
        return Err(FieldError::new(
            field,
            format!("must start with '/' and be at most {MAX_ROUTE_TEXT} characters"),
        ));
    }
    if value.len() > 1 && value.ends_with('/') {
        return Err(FieldError::new(
            field,
            "must not end with '/' (prefixes match whole segments)",
        ));
    }
    if value.contains("//") || value.split('/').any(|s| s == "." || s == "..") {
        return Err(FieldError::new(
            field,
            "must not contain empty, '.' or '..' segments",
        ));
    }
    if !value.bytes().all(is_path_byte) {
        return Err(FieldError::new(
            field,
            "may contain only unreserved, sub-delimiter, ':', '@', '%' and '/' characters",
        ));
    }
    Ok(())
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%/".contains(&b)
}

fn method(index: usize, value: &str) -> Result<(), FieldError> {
    let ok = !value.is_empty()
        && value.len() <= 32
        && value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            format!("methods[{index}]"),
            "must be an upper-case HTTP method token such as GET",
        ))
    }
}

fn host(value: &str) -> Result<(), FieldError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "host",
            "must be a lower-case host name without port (letters, digits, '-', '.')",
        ))
    }
}

fn upstream(index: usize, target: &UpstreamTarget) -> Result<(), FieldError> {
    let field = |name: &str| format!("upstreams[{index}].{name}");
    let parsed = url::Url::parse(&target.url)
        .map_err(|e| FieldError::new(field("url"), format!("is not a URL: {e}")))?;
    if target.url.len() > MAX_ROUTE_TEXT {
        return Err(FieldError::new(field("url"), "is too long"));
    }
    if parsed.scheme() != "http" {
        return Err(FieldError::new(
            field("url"),
            "must use http (TLS to upstreams arrives with the TLS work)",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(FieldError::new(field("url"), "must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(FieldError::new(
            field("url"),
            "must not carry credentials; use route headers",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(FieldError::new(field("url"), "must not have a query or fragment"));
    }
    if target.weight == 0 || target.weight > MAX_WEIGHT {
        return Err(FieldError::new(
            field("weight"),
            format!("must be 1 to {MAX_WEIGHT}"),
        ));
    }
    if target.priority > MAX_PRIORITY {
        return Err(FieldError::new(
            field("priority"),
            format!("must be at most {MAX_PRIORITY}"),
        ));
    }
    Ok(())
}

/// Headers the gateway owns; a route may not set them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-credentialflow-key-id",
    "x-credentialflow-tenant",
];

fn header(name: &str, value: &str) -> Result<(), FieldError> {
    let field = format!("headers.{}", name.chars().take(64).collect::<String>());
    if !validate::is_header_name(name, 128) {
        return Err(FieldError::new(field, "is not a valid header name"));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(FieldError::new(
            field,
            "is set by the gateway and cannot be overridden",
        ));
    }
    if value.len() > 8192 || value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(FieldError::new(
            field,
            "value must be at most 8192 bytes without control characters",
        ));
    }
    Ok(())
}

fn health_check(health: &HealthCheck) -> Result<(), FieldError> {
    if !health.path.starts_with('/')
        || health.path.len() > MAX_ROUTE_TEXT
        || !health.path.bytes().all(is_path_byte)
    {
        return Err(FieldError::new(
            "health_check.path",
            "must be an absolute path of URL path characters",
        ));
    }
    if !(100..=3_600_000).contains(&health.interval_ms) {
        return Err(FieldError::new(
            "health_check.interval_ms",
            "must be 100 to 3600000",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, prefix: &str) -> Route {
        Route::new(
            id,
            prefix,
            RouteAuth::ApiKey,
            vec![UpstreamTarget::new("http://127.0.0.1:9000")],
        )
    }

    fn fields(route: &Route) -> Vec<String> {
        validate_route(route).into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn a_plain_route_is_valid() {
        assert!(validate_route(&route("billing", "/billing")).is_empty());
        assert!(validate_route(&route("root", "/")).is_empty());
    }

    #[test]
    fn prefixes_must_be_clean_absolute_paths() {
        for bad in ["billing", "/billing/", "/a//b", "/a/../b", "/a b", ""] {
            assert_eq!(fields(&route("r", bad)), ["path_prefix"], "{bad:?}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut bad = route("bad id", "nope");
        bad.upstreams[0].url = "ftp://x".into();
        bad.upstreams.push(UpstreamTarget {
            weight: 0,
            ..UpstreamTarget::new("http://u:p@h")
        });
        bad.timeout_ms = 0;
        bad.retries = 99;
        bad.headers = vec![
            ("X-Forwarded-For".into(), "spoof".into()),
            ("ok".into(), "a\nb".into()),
        ];
        bad.methods = vec!["get".into()];
        assert_eq!(
            fields(&bad),
            [
                "id",
                "path_prefix",
                "methods[0]",
                "upstreams[0].url",
                "upstreams[1].url",
                "timeout_ms",
                "retries",
                "headers.X-Forwarded-For",
                "headers.ok"
            ]
        );
    }

    #[test]
    fn targets_need_a_weight_and_a_host() {
        let mut r = route("r", "/r");
        r.upstreams[0].weight = 0;
        assert_eq!(fields(&r), ["upstreams[0].weight"]);
        r.upstreams[0] = UpstreamTarget::new("http://127.0.0.1:1/base?x=1");
        assert_eq!(fields(&r), ["upstreams[0].url"]);
    }

    #[test]
    fn jwt_settings_come_exactly_with_auth_jwt() {
        let mut r = route("r", "/r");
        r.auth = RouteAuth::Jwt;
        assert_eq!(fields(&r), ["jwt"]);
        r.jwt = Some(JwtSettings {
            issuer: "https://idp.example".into(),
            audience: vec!["api".into()],
            jwks_url: None,
            keys: Vec::new(),
            algorithms: Vec::new(),
            leeway_secs: 60,
            scopes_claim: None,
            required_claims: Vec::new(),
            forward_claims: Vec::new(),
        });
        assert!(fields(&r).is_empty());
        r.auth = RouteAuth::ApiKey;
        assert_eq!(fields(&r), ["jwt"]);
    }
}
