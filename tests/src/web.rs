//! The /metrics server under test: a throw-away PKI ([`Pki`]), the real server on
//! 127.0.0.1 with its own thread as the daemon runs it ([`WebServer`]), and real TLS
//! clients: curl and `openssl s_client` (Debian's, on OpenSSL) and rustls ([`tls_client`]).

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use monitor::web::{self, Settings, WebConfig, WebMetrics};
use prometheus::Registry;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::sync::watch;

/// Files of a test PKI, in one temporary directory:
/// - `ca.crt`: the CA;
/// - `server.crt`, `server.key`: for 127.0.0.1 and localhost, signed by the CA;
/// - `client.crt`, `client.key`: a client certificate signed by the CA;
/// - `rogue.crt`, `rogue.key`: a client certificate from another CA.
///
/// Every key is ECDSA P-256.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Makes the certificates.
    ///
    /// # Errors
    /// When a certificate cannot be made or written.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = issuer("exfilmon test CA")?;
        let rogue_ca = issuer("another CA")?;
        let write = |name: &str, text: &str| {
            fs::write(dir.path().join(name), text).with_context(|| format!("writing {name}"))
        };
        write("ca.crt", &ca.pem())?;
        for (name, issuer, sans, usage) in [
            (
                "server",
                &ca,
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            ("client", &ca, vec![], ExtendedKeyUsagePurpose::ClientAuth),
            (
                "rogue",
                &rogue_ca,
                vec![],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, issuer)?;
            write(&format!("{name}.crt"), &cert.pem())?;
            write(&format!("{name}.key"), &key.serialize_pem())?;
        }
        Ok(Self { dir })
    }

    /// The path of one of the files.
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory of the files.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` as `NAME` beside the certificates and loads it as a web config.
    ///
    /// # Errors
    /// When it cannot be written or is not valid.
    pub fn web_config(&self, name: &str, text: &str) -> Result<WebConfig> {
        let path = self.path(name);
        fs::write(&path, text)?;
        WebConfig::load(&path).map_err(|e| anyhow::anyhow!(monitor::error_chain(&e)))
    }
}

fn issuer(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// The `tls_server_config` lines for the PKI's server certificate.
pub const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

/// The real /metrics server with `settings`, on 127.0.0.1 and a port of its own, serving
/// a registry with the server's own metrics. Stopped on drop.
pub struct WebServer {
    pub addr: SocketAddr,
    /// The server's metrics, read directly (a scrape would take a connection).
    pub metrics: WebMetrics,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl WebServer {
    /// Starts it.
    ///
    /// # Errors
    /// When the port cannot be bound or the thread started.
    pub fn start(settings: &Settings) -> Result<Self> {
        let registry = Registry::new();
        let metrics = WebMetrics::register(&registry)?;
        let (server, _sites) =
            web::server(settings, monitor::metrics::app(registry), metrics.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (stop, rx) = watch::channel(false);
        let thread = server.spawn(listener, rx)?;
        Ok(Self {
            addr,
            metrics,
            stop,
            thread: Some(thread),
        })
    }

    /// `https://127.0.0.1:PORT/PATH` (or `http://` when `tls` is false).
    #[must_use]
    pub fn url(&self, tls: bool, path: &str) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// The count of `exfilmon_http_connections_total{result}`.
    #[must_use]
    pub fn connections(&self, result: &str) -> u64 {
        self.metrics.connections.with_label_values(&[result]).get()
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Settings with a web config and the limits.
#[must_use]
pub fn settings(
    web: Option<WebConfig>,
    max_connections: usize,
    header_timeout: Duration,
) -> Settings {
    Settings {
        web,
        max_connections,
        header_timeout,
    }
}

/// What curl got.
#[derive(Debug)]
pub struct Curl {
    /// The HTTP status, 0 when there was none (curl's `%{http_code}`).
    pub code: u16,
    pub headers: String,
    pub body: String,
    /// curl's exit code (0: a response was received).
    pub exit: i32,
    /// curl's messages (with `-v`, the TLS version and cipher).
    pub stderr: String,
}

/// Runs `curl -sS --max-time 5 ARGS URL`, bounded in time.
///
/// # Panics
/// When curl cannot run.
#[must_use]
pub fn curl(args: &[&str], url: &str) -> Curl {
    let dir = tempfile::tempdir().expect("tempdir");
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "%{http_code}", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("curl runs (Debian package curl)");
    Curl {
        code: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: fs::read_to_string(&headers).unwrap_or_default(),
        body: fs::read_to_string(&body).unwrap_or_default(),
        exit: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `openssl s_client -connect ADDR ARGS` with no input (it says hello, then quits),
/// and returns what it printed, both streams.
///
/// # Panics
/// When openssl cannot run.
#[must_use]
pub fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs (Debian package openssl)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A rustls client connection to `addr` that trusts the PKI's CA, handshake done.
///
/// # Errors
/// When the connection or the handshake fails.
pub fn tls_client(
    pki: &Pki,
    addr: SocketAddr,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("ca.crt"))? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1")?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    // A TLS 1.3 handshake takes two rounds; a few more are allowed, not an endless loop.
    for _ in 0..8 {
        if !conn.is_handshaking() {
            break;
        }
        conn.complete_io(&mut tcp)?;
    }
    if conn.is_handshaking() {
        bail!("the handshake did not finish");
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}
