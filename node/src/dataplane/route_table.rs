//! The compiled route table: host, then longest path prefix on segment boundaries, then
//! method. Built once per route change and swapped in whole; a lookup only hashes borrowed
//! slices of the request path.

use std::collections::{BTreeMap, HashMap};

use actix_web::http::Method;
use cluster::{Route, RouteAuth};

use super::ai::AiRoute;
use super::hop_by_hop::is_configurable;
use super::jwt::jwks::JwksRegistry;
use super::jwt::JwtVerifier;
use super::upstream::{HealthRegistry, Target};
use crate::master_key::MasterKey;
use cluster::provider::Provider;
use cluster::sealed::UpstreamAuth;

/// A route ready for the data plane.
#[derive(Debug)]
pub struct CompiledRoute {
    pub id: String,
    pub path_prefix: String,
    /// Empty means every method.
    pub methods: Vec<Method>,
    pub auth: RouteAuth,
    pub strip_prefix: bool,
    /// Sorted by priority, lowest first.
    pub targets: Vec<Target>,
    pub timeout: std::time::Duration,
    pub retries: u32,
    /// Headers set on every forwarded request, in the upstream client's types.
    pub headers: Vec<(http1::HeaderName, http1::HeaderValue)>,
    pub health_check: Option<cluster::route::HealthCheck>,
    /// Token verification of an `auth: jwt` route. `None` on such a route means its
    /// settings could not be compiled: every token is refused.
    pub jwt: Option<std::sync::Arc<JwtVerifier>>,
    /// The route's upstream credential, opened; `Err` when it would not open (another
    /// master key): the route then refuses to forward rather than go without it.
    pub upstream_auth: Option<Result<(http1::HeaderName, http1::HeaderValue), ()>>,
    /// The models and providers of an AI route.
    pub ai: Option<std::sync::Arc<AiRoute>>,
    /// Request counts and latency, registered with the metrics recorder once.
    pub metrics: crate::telemetry::RouteMetrics,
}

impl CompiledRoute {
    fn compile(
        route: &Route,
        registry: &HealthRegistry,
        jwks: &JwksRegistry,
        master_key: Option<&MasterKey>,
        providers: &BTreeMap<String, Provider>,
    ) -> Self {
        let upstream_auth = route.upstream_auth.as_ref().map(|auth| {
            let opened = master_key
                .ok_or(())
                .and_then(|key| {
                    key.open(&auth.secret, &UpstreamAuth::associated_data(&route.id))
                        .map_err(|_| ())
                })
                .and_then(|secret| {
                    let name = http1::HeaderName::from_bytes(auth.header.as_bytes()).map_err(|_| ())?;
                    let mut value = http1::HeaderValue::from_bytes(&secret).map_err(|_| ())?;
                    value.set_sensitive(true);
                    Ok((name, value))
                });
            if opened.is_err() {
                tracing::error!(route = %route.id, "the upstream credential does not open with this node's master key; the route refuses to forward");
            }
            opened
        });
        // A credential in a header the gateway keeps to itself is never sent.
        let upstream_auth = upstream_auth
            .filter(|opened| !matches!(opened, Ok((name, _)) if !is_configurable(name.as_str().as_bytes())));
        let jwt = route.jwt.as_ref().and_then(|settings| match JwtVerifier::compile(settings, jwks, &route.id, master_key) {
            Ok(verifier) => Some(std::sync::Arc::new(verifier)),
            Err(error) => {
                tracing::error!(route = %route.id, %error, "JWT settings do not compile; the route refuses every token");
                None
            }
        });
        let mut targets: Vec<Target> = route
            .upstreams
            .iter()
            .filter_map(|t| Target::compile(t, registry))
            .collect();
        targets.sort_by_key(|t| t.priority);
        Self {
            id: route.id.clone(),
            path_prefix: route.path_prefix.clone(),
            methods: route
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            auth: route.auth,
            strip_prefix: route.strip_prefix,
            targets,
            timeout: std::time::Duration::from_millis(route.timeout_ms),
            retries: route.retries,
            headers: route
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((
                        http1::HeaderName::from_bytes(name.as_bytes()).ok()?,
                        http1::HeaderValue::from_str(value).ok()?,
                    ))
                })
                .filter(|(name, _)| is_configurable(name.as_str().as_bytes()))
                .collect(),
            health_check: route.health_check.clone(),
            jwt,
            upstream_auth,
            ai: route.ai.as_ref().map(|settings| {
                std::sync::Arc::new(AiRoute::compile(&route.id, settings, providers, master_key))
            }),
            metrics: crate::telemetry::RouteMetrics::new(&route.id),
        }
    }

    fn allows(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }

    /// Returns the path to send upstream for a request path this route matched.
    pub fn upstream_path<'a>(&self, request_path: &'a str) -> &'a str {
        if !self.strip_prefix || self.path_prefix == "/" {
            return request_path;
        }
        match &request_path[self.path_prefix.len().min(request_path.len())..] {
            "" => "/",
            rest => rest,
        }
    }
}

/// Hashing for the lookups every request makes. Lookups never insert, so the keys a client
/// chooses cannot grow a chain: SipHash's defence against that is not needed here, and it
/// cost more than the rest of a lookup.
type FastHash = foldhash::fast::RandomState;

/// Routes of one host (or of any host), by path prefix.
#[derive(Debug, Default)]
struct PrefixIndex {
    by_prefix: HashMap<String, Vec<usize>, FastHash>,
}

impl PrefixIndex {
    /// Finds the route with the longest prefix that allows `method`.
    fn find(&self, routes: &[CompiledRoute], path: &str, method: &Method) -> Lookup {
        let mut method_refused = false;
        for prefix in prefixes(path) {
            if let Some(candidates) = self.by_prefix.get(prefix) {
                match candidates.iter().find(|&&i| routes[i].allows(method)) {
                    Some(&i) => return Lookup::Found(i),
                    None => method_refused = true,
                }
            }
        }
        if method_refused {
            Lookup::MethodNotAllowed
        } else {
            Lookup::None
        }
    }
}

/// The path's prefixes on segment boundaries, longest first: `/a/b` → `/a/b`, `/a`, `/`.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.bytes().rposition(|b| b == b'/') {
            _ if current == "/" || current.is_empty() => None,
            Some(0) => Some("/"),
            Some(i) => Some(&current[..i]),
            None => None,
        };
        Some(current)
    })
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    Found(usize),
    MethodNotAllowed,
    None,
}

/// Why no route serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMatch {
    NoRoute,
    MethodNotAllowed,
}

/// Every route, indexed for lookup.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
    by_host: HashMap<String, PrefixIndex, FastHash>,
    any_host: PrefixIndex,
}

impl RouteTable {
    /// Compiles the replicated routes; AI routes take their candidates from `providers`.
    pub fn compile(
        routes: &BTreeMap<String, Route>,
        registry: &HealthRegistry,
        jwks: &JwksRegistry,
        master_key: Option<&MasterKey>,
        providers: &BTreeMap<String, Provider>,
    ) -> Self {
        let mut table = RouteTable::default();
        for route in routes.values() {
            let index = table.routes.len();
            table.routes.push(CompiledRoute::compile(
                route, registry, jwks, master_key, providers,
            ));
            let prefixes = match &route.host {
                Some(host) => table.by_host.entry(host.clone()).or_default(),
                None => &mut table.any_host,
            };
            prefixes
                .by_prefix
                .entry(route.path_prefix.clone())
                .or_default()
                .push(index);
        }
        registry.retain(|url| table.targets().any(|t| t.url == url));
        table
    }

    /// Finds the route for a request. `host` is the request's host without port.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Result<&CompiledRoute, NoMatch> {
        let specific = host
            .and_then(|h| self.host_index(h))
            .map_or(Lookup::None, |index| index.find(&self.routes, path, method));
        let lookup = match specific {
            Lookup::Found(i) => Lookup::Found(i),
            refused_or_none => match self.any_host.find(&self.routes, path, method) {
                Lookup::None => refused_or_none,
                other => other,
            },
        };
        match lookup {
            Lookup::Found(i) => Ok(&self.routes[i]),
            Lookup::MethodNotAllowed => Err(NoMatch::MethodNotAllowed),
            Lookup::None => Err(NoMatch::NoRoute),
        }
    }

    fn host_index(&self, host: &str) -> Option<&PrefixIndex> {
        if self.by_host.is_empty() {
            return None;
        }
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_host.get(&host.to_ascii_lowercase())
        } else {
            self.by_host.get(host)
        }
    }

    /// Returns every compiled route.
    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }

    fn targets(&self) -> impl Iterator<Item = &Target> {
        self.routes.iter().flat_map(|r| r.targets.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::UpstreamTarget;

    fn route(id: &str, prefix: &str, host: Option<&str>, methods: &[&str]) -> Route {
        Route {
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            host: host.map(Into::into),
            ..Route::new(
                id,
                prefix,
                RouteAuth::ApiKey,
                vec![UpstreamTarget::new("http://127.0.0.1:9000")],
            )
        }
    }

    fn table(routes: Vec<Route>) -> RouteTable {
        let map = routes.into_iter().map(|r| (r.id.clone(), r)).collect();
        RouteTable::compile(
            &map,
            &HealthRegistry::default(),
            &JwksRegistry::default(),
            None,
            &BTreeMap::new(),
        )
    }

    fn find<'a>(
        t: &'a RouteTable,
        host: Option<&str>,
        path: &str,
        method: Method,
    ) -> Result<&'a str, NoMatch> {
        t.find(host, path, &method).map(|r| r.id.as_str())
    }

    #[test]
    fn configured_headers_never_frame_the_body_or_speak_for_the_connection() {
        let mut configured = route("r", "/", None, &[]);
        configured.headers = [
            ("X-Team", "a"),
            ("Proxy-Authorization", "Basic x"),
            ("Content-Length", "5"),
            ("Keep-Alive", "timeout=1"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .to_vec();
        let t = table(vec![configured]);
        let names: Vec<&str> = t.routes()[0]
            .headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["x-team"]);
    }

    #[test]
    fn prefixes_walk_segment_boundaries_longest_first() {
        assert_eq!(
            prefixes("/a/b/c").collect::<Vec<_>>(),
            ["/a/b/c", "/a/b", "/a", "/"]
        );
        assert_eq!(prefixes("/a/").collect::<Vec<_>>(), ["/a", "/"]);
        assert_eq!(prefixes("/").collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn the_longest_prefix_wins_on_whole_segments() {
        let t = table(vec![
            route("api", "/api", None, &[]),
            route("users", "/api/users", None, &[]),
        ]);
        assert_eq!(find(&t, None, "/api/users/7", Method::GET), Ok("users"));
        assert_eq!(find(&t, None, "/api/usersx", Method::GET), Ok("api"));
        assert_eq!(find(&t, None, "/api", Method::GET), Ok("api"));
        assert_eq!(find(&t, None, "/apix", Method::GET), Err(NoMatch::NoRoute));
    }

    #[test]
    fn a_host_route_beats_a_longer_any_host_route() {
        let t = table(vec![
            route("generic", "/api/v1", None, &[]),
            route("tenant", "/api", Some("acme.example"), &[]),
        ]);
        assert_eq!(
            find(&t, Some("acme.example"), "/api/v1/x", Method::GET),
            Ok("tenant")
        );
        assert_eq!(
            find(&t, Some("ACME.example"), "/api/v1/x", Method::GET),
            Ok("tenant")
        );
        assert_eq!(
            find(&t, Some("other.example"), "/api/v1/x", Method::GET),
            Ok("generic")
        );
        assert_eq!(find(&t, None, "/api/x", Method::GET), Err(NoMatch::NoRoute));
    }

    #[test]
    fn methods_choose_between_routes_of_one_prefix() {
        let t = table(vec![
            route("read", "/items", None, &["GET", "HEAD"]),
            route("write", "/items", None, &["POST"]),
        ]);
        assert_eq!(find(&t, None, "/items/1", Method::GET), Ok("read"));
        assert_eq!(find(&t, None, "/items", Method::POST), Ok("write"));
        assert_eq!(
            find(&t, None, "/items", Method::DELETE),
            Err(NoMatch::MethodNotAllowed)
        );
    }

    #[test]
    fn a_shorter_prefix_serves_a_method_the_longer_refuses() {
        let t = table(vec![
            route("all", "/", None, &[]),
            route("ro", "/docs", None, &["GET"]),
        ]);
        assert_eq!(find(&t, None, "/docs/a", Method::PUT), Ok("all"));
    }

    #[test]
    fn strip_prefix_keeps_a_rooted_path() {
        let mut r = route("api", "/api", None, &[]);
        r.strip_prefix = true;
        let t = table(vec![r]);
        let compiled = &t.routes()[0];
        assert_eq!(compiled.upstream_path("/api/users"), "/users");
        assert_eq!(compiled.upstream_path("/api"), "/");
    }
}
