//! The control plane (`nodectl server`): the Kubernetes API over HTTPS, stored in the
//! embedded SQLite store, or in etcd with `--etcd`; the garbage collector and namespace
//! finalization run beside it, the workload controllers as its clients ([`controllers`]),
//! and the [`scheduler`].

pub mod api;
pub mod conn;
pub mod controllers;
pub mod leader;
pub mod pki;
pub mod registry;
pub mod scheduler;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use store::etcd::Etcd;
use store::sqlite::Sqlite;
use store::{Backend, CompactionPolicy};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("preparing the API: {0}")]
    Bootstrap(String),
    #[error("opening the store: {0}")]
    StoreTask(tokio::task::JoinError),
}

pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// etcd members (`http://host:port`); empty: the embedded SQLite store in the data dir.
    pub etcd: Vec<String>,
    /// TLS toward https:// etcd members (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
    pub etcd_tls: Option<store::etcd::Tls>,
    /// Leave pods without a node alone (another scheduler binds them), as k3s'
    /// `--disable-scheduler`.
    pub disable_scheduler: bool,
    /// The workload controllers that run (see [`controllers::selected`]).
    pub controllers: Vec<&'static str>,
    /// How nodes are watched over (periods, grace, eviction rate).
    pub node_lifecycle: controllers::nodelifecycle::Settings,
    /// When pods no kubelet will remove are collected.
    pub pod_gc: controllers::podgc::Settings,
    /// Leader election's timing; `None`: this server runs the scheduler and controllers
    /// without asking (`--leader-elect=false`).
    pub leader_election: Option<leader::Settings>,
    /// The pod, Service and node port ranges and the cluster domain (what the nodes read
    /// from the ConfigMap kube-system/nodectl-cluster).
    pub network: registry::cluster_config::ClusterNetwork,
    /// The address the `kubernetes` Service's endpoints give for this server
    /// (`--advertise-address`); None: the listen address, or the host's own.
    pub advertise_address: Option<std::net::Ipv4Addr>,
    /// How long an Event lives after its last write (`--event-ttl`).
    pub event_ttl: std::time::Duration,
    /// Requests without credentials are system:anonymous (`--anonymous-auth`), not 401.
    pub anonymous_auth: bool,
}

/// Spawns hyper's tasks (HTTP/2 streams) as tokio tasks in which a panic unwinds and ends
/// the task, not the server: see `crate::sys::unwind`.
#[derive(Clone, Copy)]
struct GuardedExecutor;

impl<F> hyper::rt::Executor<F> for GuardedExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(crate::sys::unwind::Unwinding(fut));
    }
}

/// Runs the API server until `shutdown` completes; then the leader leases are given up.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<(), ServerError> {
    conn::raise_nofile_limit();
    let hosts = vec![config.listen.ip().to_string()];
    let pki = pki::ensure(&config.data_dir, &hosts)?;
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let bound = listener.local_addr().map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let shown = if bound.ip().is_unspecified() { SocketAddr::new([127, 0, 0, 1].into(), bound.port()) } else { bound };
    let (etcd, etcd_tls, db) = (config.etcd.clone(), config.etcd_tls.clone(), config.data_dir.join("state.db"));
    // Opening waits on disk or on the cluster: off the async workers.
    let store: Arc<dyn Backend> =
        tokio::task::spawn_blocking(move || -> Result<Arc<dyn Backend>, store::StoreError> {
            Ok(if etcd.is_empty() {
                Arc::new(Sqlite::open(&db, CompactionPolicy::default())?)
            } else {
                Arc::new(Etcd::connect_with(&etcd, etcd_tls, CompactionPolicy::default())?)
            })
        })
        .await
        .map_err(ServerError::StoreTask)??;
    let controller_store = store.clone();
    // Written once the store is open: a kubeconfig on disk tells scripts the server is ready.
    let kubeconfig = pki::write_kubeconfig(&config.data_dir, &format!("https://{shown}"), &pki)?;
    api::bootstrap(&store).await.map_err(|e| ServerError::Bootstrap(e.message))?;
    registry::cluster_config::write(&store, &config.network).await.map_err(|e| {
        ServerError::Bootstrap(format!(
            "writing {}/{}: {e}",
            registry::cluster_config::NAMESPACE,
            registry::cluster_config::NAME
        ))
    })?;
    // Every server (not the leader alone) keeps itself in the `kubernetes` Service's endpoints.
    let advertised =
        registry::kubernetes_service::Advertised::choose(config.advertise_address, bound.ip(), bound.port());
    let first = registry::clusterip::first_address(config.network.service_cidr);
    let endpoints_store = store.clone();
    let reconciler =
        tokio::spawn(registry::kubernetes_service::run(endpoints_store.clone(), advertised.clone(), first));
    // Every server sweeps (not the leader alone): deletes at the expired revision make a
    // second sweeper harmless, and Events written through any server expire.
    let sweeper = tokio::spawn(registry::event_ttl::run(store.clone(), config.event_ttl));
    // Custom resources are served from the first request, and follow CRDs from then on.
    let crd_store = store.clone();
    tokio::task::spawn_blocking(move || registry::custom::load(&crd_store))
        .await
        .map_err(ServerError::StoreTask)?
        .map_err(|e| ServerError::Bootstrap(format!("loading CustomResourceDefinitions: {e}")))?;
    let crds = tokio::spawn(registry::custom::follow(store.clone()));
    let controller_token = pki::random_token();
    let auth = api::auth::Auth::new(pki.admin_token.clone(), pki.node_token.clone(), pki.ca_pem.clone(), store.clone())
        .with_controller_token(controller_token.clone())
        .with_signer(pki.signer.clone())
        .with_anonymous(config.anonymous_auth);
    let nodes = api::node_proxy::NodeDialer::new(pki.node_client.clone());
    let app = api::router(Arc::new(api::Api { store, auth, nodes, metrics: Default::default() }));
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.tls.clone());
    tracing::info!(%bound, kubeconfig = %kubeconfig.display(), "serving the Kubernetes API");
    eprintln!("nodectl server: listening on https://{bound}; kubeconfig {}", kubeconfig.display());
    let leaders =
        Leaders { store: controller_store, api: app.clone(), ca_pem: pki.ca_pem.clone(), token: controller_token };
    let electors = leaders.start(&config);
    tokio::select! {
        _ = serve(listener, app, acceptor) => {}
        _ = shutdown => {}
    }
    reconciler.abort();
    sweeper.abort();
    crds.abort();
    registry::kubernetes_service::leave(&endpoints_store, &advertised).await;
    electors.stop().await;
    Ok(())
}

/// What runs in the leader only: the scheduler and the controllers.
struct Leaders {
    store: Arc<dyn Backend>,
    /// The API, for the controllers' and the electors' clients.
    api: axum::Router,
    ca_pem: String,
    token: String,
}

impl Leaders {
    /// Starts the scheduler and the controllers: at once on this runtime, or under a leader
    /// lease each ([`leader`]).
    fn start(self, config: &Config) -> Electors {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut work: Vec<(&'static str, leader::Work)> = Vec::new();
        if !config.disable_scheduler {
            let store = self.store.clone();
            work.push(("kube-scheduler", Box::new(move || scheduler::run::start(store.clone()))));
        }
        let (which, nodes, pod_gc) = (config.controllers.clone(), config.node_lifecycle.clone(), config.pod_gc.clone());
        let network = config.network.clone();
        let (api, ca_pem, token) = (self.api.clone(), self.ca_pem.clone(), self.token.clone());
        let store = self.store.clone();
        work.push((
            "kube-controller-manager",
            Box::new(move || {
                controllers::start(store.clone());
                // The workload controllers are the API's clients, as kube-controller-manager is.
                match controllers::client::client(api.clone(), &token) {
                    Ok(client) => {
                        controllers::start_clients(client, &store, &which, (&nodes, &pod_gc), &network, &ca_pem)
                    }
                    Err(err) => tracing::error!(%err, "the workload controllers cannot start"),
                }
            }),
        ));
        let Some(settings) = config.leader_election.clone() else {
            for (_, w) in &work {
                w();
            }
            return Electors { stop, tasks: Vec::new() };
        };
        let client = match controllers::client::client(self.api, &self.token) {
            Ok(c) => c,
            Err(err) => {
                tracing::error!(%err, "leader election cannot start; nothing is scheduled or reconciled");
                return Electors { stop, tasks: Vec::new() };
            }
        };
        let identity = leader::identity();
        tracing::info!(%identity, "standing for leader");
        let tasks = work
            .into_iter()
            .map(|(name, w)| {
                let run = leader::run(client.clone(), name, identity.clone(), settings.clone(), w, stopped.clone());
                tokio::spawn(run)
            })
            .collect();
        Electors { stop, tasks }
    }
}

/// The leader elections running, to be stopped (their leases given up) at shutdown.
struct Electors {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Electors {
    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Accepts connections for ever.
async fn serve(listener: TcpListener, app: axum::Router, acceptor: tokio_rustls::TlsAcceptor) {
    let pending = Arc::new(conn::Pending::default());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(err) => {
                // EMFILE and the like pass; keep serving the connections we have.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Watch events are small writes in a row: with Nagle's algorithm each waits for the
        // client's delayed ACK (40 ms on Linux) whenever the one before is unacknowledged.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %err, "TCP_NODELAY refused");
        }
        let acceptor = acceptor.clone();
        let connection = pending.admit();
        // Each request carries its connection, so that authenticating frees it from the limits.
        let app = app.clone().layer(axum::Extension(connection.clone()));
        tokio::spawn(crate::sys::unwind::Unwinding(async move {
            let serve = async {
                let tls = match tokio::time::timeout(conn::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let certificate = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|c| api::auth::CertificateUser::from_der(c));
                let app = app.layer(axum::Extension(api::auth::ClientCertificate(certificate)));
                let service = TowerToHyperService::new(app);
                let mut builder = auto::Builder::new(GuardedExecutor);
                builder.http1().timer(TokioTimer::new()).header_read_timeout(conn::HEADER_TIMEOUT);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .keep_alive_interval(conn::KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(conn::KEEPALIVE_INTERVAL);
                if let Err(err) = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await {
                    tracing::debug!(%peer, %err, "connection ended with an error");
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = connection.unauthenticated_end() => tracing::debug!(%peer, "closed a connection that did not authenticate"),
            }
        }));
    }
}
