//! The control plane (`nodectl server`): the Kubernetes API over HTTPS, stored in the
//! embedded SQLite store, or in etcd with `--etcd`; the garbage collector and namespace
//! finalization run beside it ([`controllers`]). The scheduler comes in a later step.

pub mod api;
pub mod controllers;
pub mod pki;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
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
}

/// Runs the API server until the process is stopped.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let hosts = vec![config.listen.ip().to_string()];
    let pki = pki::ensure(&config.data_dir, &hosts)?;
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let bound = listener.local_addr().map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let shown = if bound.ip().is_unspecified() { SocketAddr::new([127, 0, 0, 1].into(), bound.port()) } else { bound };
    let (etcd, db) = (config.etcd.clone(), config.data_dir.join("state.db"));
    // Opening waits on disk or on the cluster: off the async workers.
    let store: Arc<dyn Backend> =
        tokio::task::spawn_blocking(move || -> Result<Arc<dyn Backend>, store::StoreError> {
            Ok(if etcd.is_empty() {
                Arc::new(Sqlite::open(&db, CompactionPolicy::default())?)
            } else {
                Arc::new(Etcd::connect(&etcd, CompactionPolicy::default())?)
            })
        })
        .await
        .map_err(ServerError::StoreTask)??;
    let controller_store = store.clone();
    // Written once the store is open: a kubeconfig on disk tells scripts the server is ready.
    let kubeconfig = pki::write_kubeconfig(&config.data_dir, &format!("https://{shown}"), &pki)?;
    api::bootstrap(&store).await.map_err(|e| ServerError::Bootstrap(e.message))?;
    let auth = api::auth::Auth::new(pki.admin_token.clone(), pki.node_token.clone(), pki.ca_pem.clone(), store.clone());
    let app = api::router(Arc::new(api::Api { store, auth }));
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.tls.clone());
    tracing::info!(%bound, kubeconfig = %kubeconfig.display(), "serving the Kubernetes API");
    eprintln!("nodectl server: listening on https://{bound}; kubeconfig {}", kubeconfig.display());
    controllers::start(controller_store);
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
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(err) => {
                    tracing::debug!(%peer, %err, "TLS handshake failed");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            if let Err(err) = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
        });
    }
}
