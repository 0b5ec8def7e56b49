//! The /metrics server: HTTP/1.1, or HTTPS with rustls, with basic auth, both from an
//! exporter-toolkit web config ([`config`]), and with limits.
//!
//! - At most `[metrics] max_connections` connections are open at once; one more is
//!   closed as soon as it is accepted (and counted as `over_limit`), so a client that
//!   holds connections open cannot make others queue.
//! - The TLS handshake, and then each request's headers, must arrive within
//!   `[metrics] header_timeout_secs` (a keep-alive connection that stays idle that long
//!   is closed too): a slow client loses its connection, not the server a slot for ever.
//! - Request headers are at most [`MAX_HEADER_BYTES`]; requests with a body get a 413.
//! - Only GET and HEAD are answered; every other method gets a 405, before any
//!   password is checked.
//!
//! The server runs on its own thread with its own runtime ([`Server::spawn`]), so that a
//! flood of connections or handshakes never delays the daemon's event loop. A reload
//! swaps the TLS and auth settings for new connections ([`Sites::apply`]).

pub mod auth;
pub mod config;

use std::{future::Future, io, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse as _, Response},
};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry, core::Collector};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;

use self::auth::Auth;
pub use self::config::{WebConfig, WebConfigError};

/// The most bytes of request line and headers read (hyper's buffer; it takes no less
/// than 8 KiB). More gets a 431.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// How long a shutdown waits for open connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The server's own metrics.
#[derive(Clone)]
pub struct WebMetrics {
    /// `exfilmon_http_connections_total{result}`.
    pub connections: IntCounterVec,
    /// `exfilmon_http_open_connections`.
    pub open: IntGauge,
    /// `exfilmon_http_requests_total{code}`.
    pub requests: IntCounterVec,
    /// `exfilmon_http_basic_auth_total{result}`.
    pub basic_auth: IntCounterVec,
}

/// How a connection ended up: every accepted connection counts in exactly one.
pub const CONNECTION_RESULTS: [&str; 4] = [
    "served",
    "over_limit",
    "handshake_failed",
    "handshake_timeout",
];

/// The status codes the server itself answers with; they have series from the start.
const CODES: [StatusCode; 6] = [
    StatusCode::OK,
    StatusCode::UNAUTHORIZED,
    StatusCode::NOT_FOUND,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::PAYLOAD_TOO_LARGE,
    StatusCode::INTERNAL_SERVER_ERROR,
];

impl WebMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::new()?;
        for c in m.collectors() {
            registry.register(c)?;
        }
        Ok(m)
    }

    fn new() -> prometheus::Result<Self> {
        let m = Self {
            connections: IntCounterVec::new(
                Opts::new(
                    "exfilmon_http_connections_total",
                    "Connections accepted by the /metrics server, by how they went: served (handed to HTTP after any TLS handshake), over_limit (closed at once: [metrics] max_connections were open), handshake_failed, handshake_timeout.",
                ),
                &["result"],
            )?,
            open: IntGauge::new(
                "exfilmon_http_open_connections",
                "Connections the /metrics server has open.",
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "exfilmon_http_requests_total",
                    "HTTP requests answered by the /metrics server, by status code.",
                ),
                &["code"],
            )?,
            basic_auth: IntCounterVec::new(
                Opts::new(
                    "exfilmon_http_basic_auth_total",
                    "Basic-auth checks by result: cached (a password verified before), verified (bcrypt ran and matched), refused (no or bad credentials).",
                ),
                &["result"],
            )?,
        };
        for r in CONNECTION_RESULTS {
            m.connections.with_label_values(&[r]);
        }
        for c in CODES {
            m.requests.with_label_values(&[c.as_str()]);
        }
        for o in auth::Outcome::ALL {
            m.basic_auth.with_label_values(&[o.name()]);
        }
        Ok(m)
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.connections.clone()),
            Box::new(self.open.clone()),
            Box::new(self.requests.clone()),
            Box::new(self.basic_auth.clone()),
        ]
    }

    /// The names of these metric families.
    #[must_use]
    pub fn family_names() -> Vec<String> {
        Self::new()
            .map(|m| {
                m.collectors()
                    .iter()
                    .flat_map(|c| {
                        c.desc()
                            .into_iter()
                            .map(|d| d.fq_name.clone())
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The settings the server runs with (`[metrics]`, less the listen address).
#[derive(Debug, Clone)]
pub struct Settings {
    pub web: Option<WebConfig>,
    pub max_connections: usize,
    pub header_timeout: Duration,
}

impl From<&crate::config::Metrics> for Settings {
    fn from(m: &crate::config::Metrics) -> Self {
        Self {
            web: m.web.clone(),
            max_connections: m.max_connections,
            header_timeout: m.header_timeout,
        }
    }
}

/// What new connections are served with; replaced by a reload.
struct Site {
    tls: Option<TlsAcceptor>,
    app: Router,
    header_timeout: Duration,
}

/// What the response middleware adds and counts.
struct Finish {
    headers: Vec<(HeaderName, HeaderValue)>,
    requests: IntCounterVec,
}

impl Site {
    fn new(settings: &Settings, routes: &Router, metrics: &WebMetrics) -> Self {
        let web = settings.web.as_ref();
        let mut app = routes.clone();
        if let Some(w) = web
            && !w.users.is_empty()
        {
            let auth = Arc::new(Auth::new(w.users.clone(), metrics.basic_auth.clone()));
            app = app.layer(middleware::from_fn_with_state(auth, auth::require));
        }
        let finish = Arc::new(Finish {
            headers: web.map(|w| w.headers.clone()).unwrap_or_default(),
            requests: metrics.requests.clone(),
        });
        // The last layer is the outermost: count and decorate every answer, then refuse
        // other methods, then bodies, then check the password.
        let app = app
            .layer(middleware::from_fn(refuse_bodies))
            .layer(middleware::from_fn(only_get_and_head))
            .layer(middleware::from_fn_with_state(finish, finish_response));
        Site {
            tls: web
                .and_then(|w| w.tls.as_ref())
                .map(|t| TlsAcceptor::from(t.server.clone())),
            app,
            header_timeout: settings.header_timeout,
        }
    }
}

async fn only_get_and_head(request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        next.run(request).await
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "Method Not Allowed\n",
        )
            .into_response()
    }
}

/// GET and HEAD carry no body here: one announced by a length above 0 or a transfer
/// encoding gets a 413, unread.
async fn refuse_bodies(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0");
    if length || headers.contains_key(header::TRANSFER_ENCODING) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request bodies are not accepted\n",
        )
            .into_response();
    }
    next.run(request).await
}

async fn finish_response(State(f): State<Arc<Finish>>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    // The code comes from the handlers and middleware above: a small fixed set.
    f.requests
        .with_label_values(&[response.status().as_str()])
        .inc();
    for (name, value) in &f.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// The accept loop, before it runs.
pub struct Server {
    sites: watch::Receiver<Arc<Site>>,
    max_connections: usize,
    metrics: WebMetrics,
}

/// Replaces what new connections are served with.
pub struct Sites {
    tx: watch::Sender<Arc<Site>>,
    routes: Router,
    metrics: WebMetrics,
}

/// The server for `routes` with `settings`, and the handle that changes its settings.
#[must_use]
pub fn server(settings: &Settings, routes: Router, metrics: WebMetrics) -> (Server, Sites) {
    let (tx, sites) = watch::channel(Arc::new(Site::new(settings, &routes, &metrics)));
    (
        Server {
            sites,
            max_connections: settings.max_connections,
            metrics: metrics.clone(),
        },
        Sites {
            tx,
            routes,
            metrics,
        },
    )
}

impl Sites {
    /// New connections are served with `settings` (its TLS, auth, headers and header
    /// timeout; `max_connections` is fixed at start). Open connections keep theirs.
    pub fn apply(&self, settings: &Settings) {
        self.tx
            .send_replace(Arc::new(Site::new(settings, &self.routes, &self.metrics)));
    }
}

impl Server {
    /// Runs the server on a thread of its own until `stop` turns true.
    ///
    /// # Errors
    ///
    /// The thread cannot be started; what the server returns comes from the handle.
    pub fn spawn(
        self,
        listener: std::net::TcpListener,
        mut stop: watch::Receiver<bool>,
    ) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
        std::thread::Builder::new()
            .name("exfilmon-web".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    listener.set_nonblocking(true)?;
                    let listener = TcpListener::from_std(listener)?;
                    self.run(listener, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
                })
            })
    }

    /// Serves connections from `listener` until `shutdown` resolves, then lets open
    /// connections finish their requests for up to [`SHUTDOWN_GRACE`].
    ///
    /// # Errors
    ///
    /// None so far: failed accepts are logged and retried.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let (stop_tx, stop) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, say: wait rather than spin.
                        tracing::warn!(error = %e, "accepting a /metrics connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                self.metrics
                    .connections
                    .with_label_values(&["over_limit"])
                    .inc();
                drop(stream);
                continue;
            };
            let site = self.sites.borrow().clone();
            tokio::spawn(connection(
                stream,
                site,
                slot,
                self.metrics.clone(),
                stop.clone(),
            ));
        }
        let _ = stop_tx.send(true);
        // Every slot back means every connection has ended.
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all)).await;
        Ok(())
    }
}

/// Decrements the open-connections gauge when the connection ends, however it ends.
struct Open(IntGauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn connection(
    stream: TcpStream,
    site: Arc<Site>,
    _slot: OwnedSemaphorePermit,
    metrics: WebMetrics,
    stop: watch::Receiver<bool>,
) {
    metrics.open.inc();
    let _open = Open(metrics.open.clone());
    let _ = stream.set_nodelay(true);
    let counted = |result: &str| metrics.connections.with_label_values(&[result]).inc();
    match &site.tls {
        None => {
            counted("served");
            serve_http(TokioIo::new(stream), &site, stop).await;
        }
        Some(acceptor) => {
            match tokio::time::timeout(site.header_timeout, acceptor.accept(stream)).await {
                Err(_) => counted("handshake_timeout"),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake on /metrics failed");
                    counted("handshake_failed");
                }
                Ok(Ok(tls)) => {
                    counted("served");
                    serve_http(TokioIo::new(tls), &site, stop).await;
                }
            }
        }
    }
}

async fn serve_http<I>(io: I, site: &Site, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(site.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(io, TowerToHyperService::new(site.app.clone()));
    tokio::pin!(conn);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "a /metrics connection ended with an error");
            }
        }
        () = stopped => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

#[cfg(test)]
mod tests;
