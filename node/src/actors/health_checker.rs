//! The upstream health checker: probes every target the routes name, takes a target out
//! of rotation after consecutive failed probes and puts an ejected one back after a
//! successful probe. Targets of a route with a `health_check` get an HTTP GET of its path
//! (2xx/3xx is healthy); others get a TCP connect.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::dataplane::read_model::{ReadModel, View};
use crate::dataplane::upstream::TargetHealth;
use crate::dataplane::upstream_client::UpstreamClient;

/// How often the checker looks for due probes.
const TICK: Duration = Duration::from_millis(200);
/// Probe interval of targets whose route configures none.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How to probe one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// GET this URL; 2xx or 3xx is healthy.
    Http(String),
    /// Connect to this `host:port`.
    Tcp(String),
}

/// One probe to run now.
#[derive(Debug, Clone)]
pub struct Probe {
    pub url: String,
    pub kind: ProbeKind,
    pub health: Arc<TargetHealth>,
}

/// Returns the probes due at `now`: one per distinct target, at the shortest interval any
/// route asks for, skipping targets with a probe still running.
pub fn due_probes(
    view: &View,
    last_probe: &HashMap<String, Instant>,
    running: &HashSet<String>,
    now: Instant,
) -> Vec<Probe> {
    let mut chosen: HashMap<&str, (Duration, Probe)> = HashMap::new();
    for route in view.routes.routes() {
        let interval = route
            .health_check
            .as_ref()
            .map_or(DEFAULT_PROBE_INTERVAL, |h| Duration::from_millis(h.interval_ms));
        for target in &route.targets {
            let kind = match &route.health_check {
                Some(check) => ProbeKind::Http(format!("{}{}", target.base_url, check.path)),
                None => ProbeKind::Tcp(target.authority.to_string()),
            };
            let probe = Probe {
                url: target.url.clone(),
                kind,
                health: target.health.clone(),
            };
            // An HTTP probe says more than a TCP one; a shorter interval wins among equals.
            let replace = chosen.get(target.url.as_str()).is_none_or(|(current, existing)| {
                let http = matches!(probe.kind, ProbeKind::Http(_));
                let existing_http = matches!(existing.kind, ProbeKind::Http(_));
                (http && !existing_http) || (http == existing_http && interval < *current)
            });
            if replace {
                chosen.insert(target.url.as_str(), (interval, probe));
            }
        }
    }
    chosen
        .into_values()
        .filter(|(interval, probe)| {
            // A target out of rotation is probed at least every second, whatever its
            // route's interval, so a recovered target returns quickly.
            let interval = if probe.health.is_healthy() {
                *interval
            } else {
                (*interval).min(DEFAULT_PROBE_INTERVAL)
            };
            !running.contains(&probe.url)
                && last_probe
                    .get(&probe.url)
                    .is_none_or(|at| now.saturating_duration_since(*at) >= interval)
        })
        .map(|(_, probe)| probe)
        .collect()
}

/// The actor shell around [`due_probes`].
pub struct HealthChecker {
    read_model: Arc<ReadModel>,
    client: UpstreamClient,
    last_probe: HashMap<String, Instant>,
    running: HashSet<String>,
}

impl HealthChecker {
    pub fn new(read_model: Arc<ReadModel>) -> Self {
        Self {
            read_model,
            client: UpstreamClient::default(),
            last_probe: HashMap::new(),
            running: HashSet::new(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let view = self.read_model.load_full();
        let probes = due_probes(&view, &self.last_probe, &self.running, now);
        // Forget targets no route names any more.
        let named: HashSet<&str> = view
            .routes
            .routes()
            .iter()
            .flat_map(|r| r.targets.iter().map(|t| t.url.as_str()))
            .collect();
        self.last_probe.retain(|url, _| named.contains(url.as_str()));
        for probe in probes {
            self.last_probe.insert(probe.url.clone(), now);
            self.running.insert(probe.url.clone());
            let client = self.client.clone();
            ctx.spawn(
                async move {
                    let healthy = run_probe(&client, &probe.kind).await;
                    (probe, healthy)
                }
                .into_actor(self)
                .map(|(probe, healthy), actor, _| {
                    actor.running.remove(&probe.url);
                    if healthy {
                        if probe.health.probe_succeeded() {
                            tracing::info!(target = %probe.url, "upstream target back in rotation");
                        }
                    } else if probe.health.probe_failed() {
                        tracing::warn!(target = %probe.url, "upstream target down: probes failing");
                    }
                }),
            );
        }
    }
}

async fn run_probe(client: &UpstreamClient, kind: &ProbeKind) -> bool {
    match kind {
        ProbeKind::Http(url) => client
            .probe(url, PROBE_TIMEOUT)
            .await
            .is_some_and(|status| (200..400).contains(&status)),
        ProbeKind::Tcp(authority) => {
            matches!(
                tokio::time::timeout(
                    PROBE_TIMEOUT,
                    actix_rt::net::TcpStream::connect(authority.as_str())
                )
                .await,
                Ok(Ok(_))
            )
        }
    }
}

impl Actor for HealthChecker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |actor, ctx| actor.tick(ctx));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cluster::route::HealthCheck;
    use cluster::{Route, RouteAuth, UpstreamTarget};

    use super::*;
    use crate::dataplane::route_table::RouteTable;
    use crate::dataplane::upstream::HealthRegistry;

    fn route(id: &str, urls: &[&str], check: Option<(&str, u64)>) -> Route {
        Route {
            health_check: check.map(|(path, interval_ms)| HealthCheck {
                path: path.into(),
                interval_ms,
            }),
            ..Route::new(
                id,
                format!("/{id}"),
                RouteAuth::None,
                urls.iter().map(|u| UpstreamTarget::new(*u)).collect(),
            )
        }
    }

    fn view(routes: Vec<Route>) -> View {
        let map: BTreeMap<String, Route> = routes.into_iter().map(|r| (r.id.clone(), r)).collect();
        View {
            routes: Arc::new(RouteTable::compile(
                &map,
                &HealthRegistry::default(),
                &crate::dataplane::jwt::jwks::JwksRegistry::default(),
                None,
                &std::collections::BTreeMap::new(),
            )),
            ..View::default()
        }
    }

    #[test]
    fn each_target_is_probed_once_preferring_http_checks() {
        let v = view(vec![
            route("a", &["http://127.0.0.1:1", "http://127.0.0.1:2"], None),
            route("b", &["http://127.0.0.1:2"], Some(("/health", 500))),
        ]);
        let mut probes = due_probes(&v, &HashMap::new(), &HashSet::new(), Instant::now());
        probes.sort_by(|x, y| x.url.cmp(&y.url));
        assert_eq!(probes.len(), 2);
        assert_eq!(probes[0].kind, ProbeKind::Tcp("127.0.0.1:1".into()));
        assert_eq!(
            probes[1].kind,
            ProbeKind::Http("http://127.0.0.1:2/health".into())
        );
    }

    #[test]
    fn probes_wait_for_their_interval_and_never_overlap() {
        let v = view(vec![route("a", &["http://127.0.0.1:1"], Some(("/h", 500)))]);
        let now = Instant::now();
        let url = "http://127.0.0.1:1".to_owned();
        let recent = HashMap::from([(url.clone(), now - Duration::from_millis(100))]);
        assert!(due_probes(&v, &recent, &HashSet::new(), now).is_empty());
        let old = HashMap::from([(url.clone(), now - Duration::from_millis(600))]);
        assert_eq!(due_probes(&v, &old, &HashSet::new(), now).len(), 1);
        assert!(due_probes(&v, &old, &HashSet::from([url]), now).is_empty());
    }
}
