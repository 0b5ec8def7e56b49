//! The web config file (`[metrics] web_config`): TLS and basic auth for /metrics, in the
//! format of Prometheus' exporter-toolkit (node_exporter's `--web.config.file`), so one
//! file can serve both.
//!
//! ```yaml
//! tls_server_config:               # absent: plain HTTP
//!   cert_file: server.crt          # or cert: inline PEM; paths are relative to this file
//!   key_file: server.key           # or key: inline PEM
//!   client_auth_type: RequireAndVerifyClientCert
//!                                  # NoClientCert (default) | VerifyClientCertIfGiven
//!                                  # | RequireAndVerifyClientCert
//!   client_ca_file: clients.crt    # or client_ca: the CAs of the client certificates
//!   min_version: TLS12             # TLS12 (default) | TLS13
//!   max_version: TLS13             # TLS12 | TLS13 (default)
//!   cipher_suites:                 # TLS 1.2 suites by their Go names (default: all six);
//!     - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256   # TLS 1.3 always offers its own three
//!   prefer_server_cipher_suites: true             # (default true)
//!   curve_preferences: [X25519, CurveP256]        # X25519 | CurveP256 | CurveP384 (default all)
//! http_server_config:
//!   http2: false                   # HTTP/1.1 only: true is refused
//!   headers:                       # added to every response
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:                # absent or empty: no basic auth
//!   prometheus: $2y$10$...         # bcrypt hash, cost 4..=14
//! ```
//!
//! Everything exporter-toolkit accepts is either applied or refused with an error that
//! names the file, the line and the key: nothing is ignored. Refused: TLS 1.0 and 1.1,
//! the client-auth types that take a certificate without verifying it
//! (`RequestClientCert`, `RequireAnyClientCert`), `client_allowed_sans`, `http2: true`,
//! `rate_limit`, CBC and RSA-key-exchange cipher suites, `CurveP521`, and bcrypt costs
//! above 14.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
    str::FromStr as _,
    sync::Arc,
};

use axum::http::{HeaderName, HeaderValue};
use rustls::{
    ProtocolVersion, RootCertStore, ServerConfig, SupportedCipherSuite,
    crypto::{SupportedKxGroup, ring as provider},
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
    version::{TLS12, TLS13},
};
use serde::{Deserialize, de::IgnoredAny};
use serde_saphyr::Spanned;
use thiserror::Error;

use crate::config::Location;

/// The highest bcrypt cost accepted: a check at cost 14 takes about a second, and a
/// wrong password costs a full check.
pub const MAX_BCRYPT_COST: u32 = 14;

/// The TLS 1.2 cipher suites on offer, by their Go (and IANA) names, in rustls' order.
const TLS12_SUITES: [&str; 6] = [
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// The TLS 1.3 suites' Go names: exporter-toolkit accepts them, Go ignores them.
const TLS13_SUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// The headers `http_server_config.headers` may set, with their allowed values (none:
/// any value), as exporter-toolkit has them.
const HEADERS: [(&str, &[&str]); 5] = [
    ("Content-Security-Policy", &[]),
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
];

/// A loaded, validated web config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// `tls_server_config`; `None` serves plain HTTP.
    pub tls: Option<Tls>,
    /// `http_server_config.headers`, added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `basic_auth_users`: user → bcrypt hash. Empty: no basic auth.
    pub users: BTreeMap<String, String>,
}

/// The TLS settings, built into a rustls server config at load, so that a bad key or
/// certificate is found by `check-config` and refused by a reload.
#[derive(Debug, Clone)]
pub struct Tls {
    pub server: Arc<ServerConfig>,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
}

/// Two loads are equal only if they are the same load: the rustls config holds the key
/// and cannot be compared.
impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.server, &other.server)
    }
}

impl Eq for Tls {}

/// `client_auth_type`, the kinds exfilmon serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

/// `min_version` and `max_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        }
    }
}

/// Why a web config was refused. Every variant names the file; all but `Read` the line
/// and key.
#[derive(Debug, Error)]
pub enum WebConfigError {
    /// The file cannot be read.
    #[error("{}: cannot read the web config: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not YAML, an unknown key, or a value of the wrong type.
    #[error("{at}: {message}")]
    Yaml { at: Box<Location>, message: String },
    /// A certificate or key file named by the config cannot be read.
    #[error("{at}: cannot read {}: {source}", path.display())]
    File {
        at: Box<Location>,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A value exfilmon does not accept.
    #[error("{at}: {problem}")]
    Invalid { at: Box<Location>, problem: Problem },
    /// rustls refused the certificate, the key or the protocol settings.
    #[error("{at}: {source}")]
    Rustls {
        at: Box<Location>,
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the client CAs.
    #[error("{at}: the client CAs cannot verify client certificates: {source}")]
    ClientCas {
        at: Box<Location>,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

/// What is wrong with a value.
#[derive(Debug, Error)]
pub enum Problem {
    #[error("{value:?} is not supported: exfilmon serves TLS 1.2 and 1.3 only (TLS12, TLS13)")]
    OldTlsVersion { value: String },
    #[error("unknown TLS version {value:?} (TLS12 or TLS13)")]
    TlsVersion { value: String },
    #[error("min_version {min} is above max_version {max}")]
    VersionOrder {
        min: &'static str,
        max: &'static str,
    },
    #[error(
        "unknown client_auth_type {value:?} (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
    )]
    ClientAuthType { value: String },
    #[error(
        "{value} takes client certificates without verifying them, which authenticates nobody; exfilmon refuses it: use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file"
    )]
    UnverifiedClientAuth { value: String },
    #[error("{value} needs client_ca_file (or client_ca): the CAs that sign client certificates")]
    ClientCaMissing { value: &'static str },
    #[error(
        "client CAs are set but client_auth_type is NoClientCert, so no client certificate would be asked for: set client_auth_type: RequireAndVerifyClientCert"
    )]
    ClientCaUnused,
    #[error(
        "client_allowed_sans is not supported: give each allowed client a certificate from its own CA in client_ca_file"
    )]
    ClientAllowedSans,
    #[error("set either {a} or {b}, not both")]
    Both { a: &'static str, b: &'static str },
    #[error("TLS needs {a} (or {b})")]
    Missing { a: &'static str, b: &'static str },
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("not a PEM certificate: {detail}")]
    Certificate { detail: String },
    #[error("no PEM private key found: {detail}")]
    Key { detail: String },
    #[error(
        "{value:?} is a TLS 1.3 suite; only TLS 1.2 suites can be chosen (as in exporter-toolkit): TLS 1.3 always offers its own three"
    )]
    Tls13Suite { value: String },
    #[error("{value:?} is not a TLS 1.2 cipher suite exfilmon offers ({})", TLS12_SUITES.join(", "))]
    CipherSuite { value: String },
    #[error(
        "no cipher suite in the list fits the certificate's {key} key, so no TLS 1.2 client could connect: add a TLS_ECDHE_{key}_WITH_* suite or set min_version: TLS13"
    )]
    NoSuiteForKey { key: &'static str },
    #[error("{value:?} is not a curve exfilmon offers (X25519, CurveP256, CurveP384)")]
    Curve { value: String },
    #[error(
        "HTTP/2 is not served: exfilmon speaks HTTP/1.1, as Prometheus scrapes; leave http2 out or set it to false"
    )]
    Http2,
    #[error(
        "header {name:?} cannot be set (Content-Security-Policy, Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection)"
    )]
    Header { name: String },
    #[error("{value:?} is not allowed for {name} (one of: {})", allowed.join(", "))]
    HeaderValue {
        name: &'static str,
        value: String,
        allowed: &'static [&'static str],
    },
    #[error("{value:?} is not a valid header value")]
    HeaderBytes { value: String },
    #[error(
        "rate_limit is not supported: [metrics] max_connections and header_timeout_secs bound the server"
    )]
    RateLimit,
    #[error("{user:?} has no password hash")]
    NoHash { user: String },
    #[error("the key does not belong to the certificate (cert_file or cert)")]
    KeyMismatch,
    #[error("user name {user:?} contains ':', which HTTP basic auth cannot carry")]
    UserName { user: String },
    #[error(
        "the password of {user:?} is not a bcrypt hash ({detail}); make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"
    )]
    BcryptHash { user: String, detail: String },
    #[error(
        "the bcrypt cost of {user:?} is {cost}; exfilmon takes 4 to {MAX_BCRYPT_COST} (each step doubles the time of a check, and every wrong password costs a full one)"
    )]
    BcryptCost { user: String, cost: u32 },
}

impl WebConfig {
    /// Reads and validates the web config at `path`, with the certificates and keys it
    /// names.
    ///
    /// # Errors
    ///
    /// The first problem, with the file, line and key.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        WebConfig::parse(&text, path)
    }

    /// Validates `text`, read from `path` (for messages and relative paths).
    ///
    /// # Errors
    ///
    /// As [`WebConfig::load`].
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
        let ctx = Ctx { file: path };
        // An empty file (or only comments) is an empty config, as for exporter-toolkit.
        let raw: RawWeb = if text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#')
        }) {
            RawWeb::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| ctx.yaml_error(&e))?
        };
        if let Some(r) = &raw.rate_limit {
            return Err(ctx.invalid(r, "rate_limit", Problem::RateLimit));
        }
        let tls = match &raw.tls_server_config {
            Some(t) => ctx.tls(t)?,
            None => None,
        };
        let headers = match &raw.http_server_config {
            Some(h) => ctx.http(h)?,
            None => Vec::new(),
        };
        let users = ctx.users(raw.basic_auth_users.unwrap_or_default())?;
        Ok(WebConfig {
            path: path.to_owned(),
            tls,
            headers,
            users,
        })
    }
}

// ---------------------------------------------------------------------------
// Raw (as written) structures: exporter-toolkit's keys, every one of them, so that a
// known key exfilmon does not serve is refused by name rather than called unknown.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    tls_server_config: Option<Spanned<RawTls>>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, Spanned<Option<String>>>>,
    rate_limit: Option<Spanned<IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    client_ca: Option<Spanned<String>>,
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    client_ca_file: Option<Spanned<String>>,
    client_auth_type: Option<Spanned<String>>,
    client_allowed_sans: Option<Spanned<IgnoredAny>>,
    min_version: Option<Spanned<String>>,
    max_version: Option<Spanned<String>>,
    cipher_suites: Option<Vec<Spanned<String>>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<Spanned<bool>>,
    headers: Option<BTreeMap<String, Spanned<String>>>,
}

// ---------------------------------------------------------------------------
// Validation.

struct Ctx<'a> {
    file: &'a Path,
}

/// PEM text and where it was set (the inline key, or the file key).
struct Pem {
    bytes: Vec<u8>,
    at: Box<Location>,
}

impl Ctx<'_> {
    #[expect(
        clippy::unnecessary_box_returns,
        reason = "boxed to keep WebConfigError small, as ConfigError does"
    )]
    fn at_line(&self, line: u64, key: impl Into<String>) -> Box<Location> {
        Box::new(Location {
            file: self.file.to_owned(),
            line: usize::try_from(line).unwrap_or(usize::MAX),
            key: key.into(),
        })
    }

    #[expect(
        clippy::unnecessary_box_returns,
        reason = "boxed to keep WebConfigError small, as ConfigError does"
    )]
    fn at<T>(&self, v: &Spanned<T>, key: impl Into<String>) -> Box<Location> {
        self.at_line(v.referenced.line(), key)
    }

    fn invalid<T>(
        &self,
        v: &Spanned<T>,
        key: impl Into<String>,
        problem: Problem,
    ) -> WebConfigError {
        WebConfigError::Invalid {
            at: self.at(v, key),
            problem,
        }
    }

    fn yaml_error(&self, e: &serde_saphyr::Error) -> WebConfigError {
        let line = e.location().map_or(1, |l| l.line());
        WebConfigError::Yaml {
            at: self.at_line(line, ""),
            message: e.without_snippet().to_string().trim().to_owned(),
        }
    }

    /// The PEM text of `inline` or of the file `path` names (relative to the config),
    /// `None` when neither is set.
    fn pem(
        &self,
        inline: Option<&Spanned<String>>,
        path: Option<&Spanned<String>>,
        keys: [&'static str; 2],
    ) -> Result<Option<Pem>, WebConfigError> {
        let [inline_key, file_key] = keys;
        match (inline, path) {
            (Some(_), Some(p)) => Err(self.invalid(
                p,
                format!("tls_server_config.{file_key}"),
                Problem::Both {
                    a: inline_key,
                    b: file_key,
                },
            )),
            (Some(text), None) => Ok(Some(Pem {
                bytes: text.value.clone().into_bytes(),
                at: self.at(text, format!("tls_server_config.{inline_key}")),
            })),
            (None, Some(p)) => {
                let at = self.at(p, format!("tls_server_config.{file_key}"));
                let path = self.file.parent().unwrap_or(Path::new("")).join(&p.value);
                let bytes = fs::read(&path).map_err(|source| WebConfigError::File {
                    at: at.clone(),
                    path,
                    source,
                })?;
                Ok(Some(Pem { bytes, at }))
            }
            (None, None) => Ok(None),
        }
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one pass over tls_server_config, key by key, in the file's order"
    )]
    fn tls(&self, raw: &Spanned<RawTls>) -> Result<Option<Tls>, WebConfigError> {
        let section = self.at(raw, "tls_server_config");
        let r = &raw.value;
        let anything = r.cert.is_some()
            || r.key.is_some()
            || r.client_ca.is_some()
            || r.cert_file.is_some()
            || r.key_file.is_some()
            || r.client_ca_file.is_some()
            || r.client_auth_type.is_some()
            || r.client_allowed_sans.is_some()
            || r.min_version.is_some()
            || r.max_version.is_some()
            || r.cipher_suites.is_some()
            || r.prefer_server_cipher_suites.is_some()
            || r.curve_preferences.is_some();
        if !anything {
            return Ok(None);
        }
        if let Some(s) = &r.client_allowed_sans {
            return Err(self.invalid(
                s,
                "tls_server_config.client_allowed_sans",
                Problem::ClientAllowedSans,
            ));
        }
        let missing = |a, b| WebConfigError::Invalid {
            at: section.clone(),
            problem: Problem::Missing { a, b },
        };
        let cert = self
            .pem(r.cert.as_ref(), r.cert_file.as_ref(), ["cert", "cert_file"])?
            .ok_or_else(|| missing("cert_file", "cert"))?;
        let key = self
            .pem(r.key.as_ref(), r.key_file.as_ref(), ["key", "key_file"])?
            .ok_or_else(|| missing("key_file", "key"))?;
        let client_ca = self.pem(
            r.client_ca.as_ref(),
            r.client_ca_file.as_ref(),
            ["client_ca", "client_ca_file"],
        )?;

        let chain = certificates(&cert)?;
        let key_der =
            PrivateKeyDer::from_pem_slice(&key.bytes).map_err(|e| WebConfigError::Invalid {
                at: key.at.clone(),
                problem: Problem::Key {
                    detail: e.to_string(),
                },
            })?;

        let version = |v: Option<&Spanned<String>>, key: &str, default| match v {
            None => Ok(default),
            Some(s) => match s.value.as_str() {
                "TLS12" => Ok(TlsVersion::Tls12),
                "TLS13" => Ok(TlsVersion::Tls13),
                "TLS10" | "TLS11" => Err(self.invalid(
                    s,
                    format!("tls_server_config.{key}"),
                    Problem::OldTlsVersion {
                        value: s.value.clone(),
                    },
                )),
                other => Err(self.invalid(
                    s,
                    format!("tls_server_config.{key}"),
                    Problem::TlsVersion {
                        value: other.to_owned(),
                    },
                )),
            },
        };
        let min_version = version(r.min_version.as_ref(), "min_version", TlsVersion::Tls12)?;
        let max_version = version(r.max_version.as_ref(), "max_version", TlsVersion::Tls13)?;
        if min_version > max_version {
            let at = r.min_version.as_ref().map_or(section.clone(), |s| {
                self.at(s, "tls_server_config.min_version")
            });
            return Err(WebConfigError::Invalid {
                at,
                problem: Problem::VersionOrder {
                    min: min_version.name(),
                    max: max_version.name(),
                },
            });
        }

        let client_auth = match &r.client_auth_type {
            None => ClientAuth::NoClientCert,
            Some(s) => match s.value.as_str() {
                "" | "NoClientCert" => ClientAuth::NoClientCert,
                "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
                "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
                v @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert") => {
                    return Err(self.invalid(
                        s,
                        "tls_server_config.client_auth_type",
                        Problem::UnverifiedClientAuth {
                            value: v.to_owned(),
                        },
                    ));
                }
                other => {
                    return Err(self.invalid(
                        s,
                        "tls_server_config.client_auth_type",
                        Problem::ClientAuthType {
                            value: other.to_owned(),
                        },
                    ));
                }
            },
        };
        let auth_at = || {
            r.client_auth_type.as_ref().map_or(section.clone(), |s| {
                self.at(s, "tls_server_config.client_auth_type")
            })
        };
        let roots = match (&client_ca, client_auth) {
            (Some(ca), ClientAuth::NoClientCert) => {
                return Err(WebConfigError::Invalid {
                    at: ca.at.clone(),
                    problem: Problem::ClientCaUnused,
                });
            }
            (None, ClientAuth::NoClientCert) => None,
            (None, auth) => {
                return Err(WebConfigError::Invalid {
                    at: auth_at(),
                    problem: Problem::ClientCaMissing {
                        value: match auth {
                            ClientAuth::VerifyClientCertIfGiven => "VerifyClientCertIfGiven",
                            _ => "RequireAndVerifyClientCert",
                        },
                    },
                });
            }
            (Some(ca), _) => {
                let mut roots = RootCertStore::empty();
                for c in certificates(ca)? {
                    roots.add(c).map_err(|source| WebConfigError::Rustls {
                        at: ca.at.clone(),
                        source,
                    })?;
                }
                Some((Arc::new(roots), ca.at.clone()))
            }
        };

        let mut crypto = provider::default_provider();
        if let Some(list) = &r.cipher_suites
            && !list.is_empty()
        {
            let mut suites: Vec<SupportedCipherSuite> = crypto
                .cipher_suites
                .iter()
                .filter(|s| s.version().version == ProtocolVersion::TLSv1_3)
                .copied()
                .collect();
            for (i, s) in list.iter().enumerate() {
                let key = format!("tls_server_config.cipher_suites[{i}]");
                let name = s.value.as_str();
                if TLS13_SUITES.contains(&name) {
                    return Err(self.invalid(
                        s,
                        key,
                        Problem::Tls13Suite {
                            value: s.value.clone(),
                        },
                    ));
                }
                let Some(suite) = crypto.cipher_suites.iter().find(|c| {
                    c.version().version == ProtocolVersion::TLSv1_2
                        && format!("{:?}", c.suite()) == name
                }) else {
                    return Err(self.invalid(
                        s,
                        key,
                        Problem::CipherSuite {
                            value: s.value.clone(),
                        },
                    ));
                };
                if !suites.iter().any(|have| have.suite() == suite.suite()) {
                    suites.push(*suite);
                }
            }
            let signer = crypto
                .key_provider
                .load_private_key(key_der.clone_key())
                .map_err(|source| WebConfigError::Rustls {
                    at: key.at.clone(),
                    source,
                })?;
            let algorithm = signer.algorithm();
            let tls12_usable = suites.iter().any(|s| {
                s.version().version == ProtocolVersion::TLSv1_2
                    && s.usable_for_signature_algorithm(algorithm)
            });
            if min_version == TlsVersion::Tls12 && !tls12_usable {
                let key = if algorithm == rustls::SignatureAlgorithm::RSA {
                    "RSA"
                } else {
                    "ECDSA"
                };
                return Err(self.invalid(
                    &list[0],
                    "tls_server_config.cipher_suites",
                    Problem::NoSuiteForKey { key },
                ));
            }
            crypto.cipher_suites = suites;
        }
        if let Some(list) = &r.curve_preferences
            && !list.is_empty()
        {
            let mut groups: Vec<&'static dyn SupportedKxGroup> = Vec::new();
            for (i, c) in list.iter().enumerate() {
                let group = match c.value.as_str() {
                    "X25519" => provider::kx_group::X25519,
                    "CurveP256" => provider::kx_group::SECP256R1,
                    "CurveP384" => provider::kx_group::SECP384R1,
                    _ => {
                        return Err(self.invalid(
                            c,
                            format!("tls_server_config.curve_preferences[{i}]"),
                            Problem::Curve {
                                value: c.value.clone(),
                            },
                        ));
                    }
                };
                if !groups.iter().any(|g| g.name() == group.name()) {
                    groups.push(group);
                }
            }
            crypto.kx_groups = groups;
        }

        let crypto = Arc::new(crypto);
        let versions: &[&'static rustls::SupportedProtocolVersion] =
            match (min_version, max_version) {
                (TlsVersion::Tls12, TlsVersion::Tls12) => &[&TLS12],
                (TlsVersion::Tls13, _) => &[&TLS13],
                (TlsVersion::Tls12, TlsVersion::Tls13) => &[&TLS12, &TLS13],
            };
        let builder = ServerConfig::builder_with_provider(crypto.clone())
            .with_protocol_versions(versions)
            .map_err(|source| WebConfigError::Rustls {
                at: section.clone(),
                source,
            })?;
        let builder = match roots {
            None => builder.with_no_client_auth(),
            Some((roots, at)) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, crypto);
                let verifier = if client_auth == ClientAuth::VerifyClientCertIfGiven {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|source| WebConfigError::ClientCas { at, source })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server =
            builder
                .with_single_cert(chain, key_der)
                .map_err(|source| match source {
                    rustls::Error::InconsistentKeys(_) => WebConfigError::Invalid {
                        at: key.at.clone(),
                        problem: Problem::KeyMismatch,
                    },
                    source => WebConfigError::Rustls {
                        at: key.at.clone(),
                        source,
                    },
                })?;
        server.ignore_client_order = r.prefer_server_cipher_suites.unwrap_or(true);
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Tls {
            server: Arc::new(server),
            client_auth,
            min_version,
            max_version,
        }))
    }

    fn http(&self, raw: &RawHttp) -> Result<Vec<(HeaderName, HeaderValue)>, WebConfigError> {
        if let Some(h2) = &raw.http2
            && h2.value
        {
            return Err(self.invalid(h2, "http_server_config.http2", Problem::Http2));
        }
        let mut out = Vec::new();
        for (name, value) in raw.headers.iter().flatten() {
            let key = format!("http_server_config.headers.{name}");
            let Some((known, allowed)) = HEADERS.iter().find(|(n, _)| n == name) else {
                return Err(self.invalid(value, key, Problem::Header { name: name.clone() }));
            };
            // Unset if blank, as in exporter-toolkit.
            if value.value.is_empty() {
                continue;
            }
            if !allowed.is_empty() && !allowed.contains(&value.value.as_str()) {
                return Err(self.invalid(
                    value,
                    key,
                    Problem::HeaderValue {
                        name: known,
                        value: value.value.clone(),
                        allowed,
                    },
                ));
            }
            let header_name = HeaderName::from_bytes(known.as_bytes()).map_err(|_| {
                self.invalid(value, key.clone(), Problem::Header { name: name.clone() })
            })?;
            let header_value = HeaderValue::from_str(&value.value).map_err(|_| {
                self.invalid(
                    value,
                    key.clone(),
                    Problem::HeaderBytes {
                        value: value.value.clone(),
                    },
                )
            })?;
            out.push((header_name, header_value));
        }
        Ok(out)
    }

    fn users(
        &self,
        raw: BTreeMap<String, Spanned<Option<String>>>,
    ) -> Result<BTreeMap<String, String>, WebConfigError> {
        let mut out = BTreeMap::new();
        for (user, hash) in raw {
            let key = format!("basic_auth_users.{user}");
            if user.contains(':') {
                return Err(self.invalid(&hash, key, Problem::UserName { user }));
            }
            let Some(value) = hash.value.clone() else {
                return Err(self.invalid(&hash, key, Problem::NoHash { user }));
            };
            let parts = match bcrypt::HashParts::from_str(&value) {
                Ok(p) => p,
                Err(e) => {
                    return Err(self.invalid(
                        &hash,
                        key,
                        Problem::BcryptHash {
                            user,
                            detail: e.to_string(),
                        },
                    ));
                }
            };
            let cost = parts.get_cost();
            if !(4..=MAX_BCRYPT_COST).contains(&cost) {
                return Err(self.invalid(&hash, key, Problem::BcryptCost { user, cost }));
            }
            out.insert(user, value);
        }
        Ok(out)
    }
}

/// The certificates of a PEM text, at least one.
fn certificates(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let invalid = |problem| WebConfigError::Invalid {
        at: pem.at.clone(),
        problem,
    };
    let chain = CertificateDer::pem_slice_iter(&pem.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            invalid(Problem::Certificate {
                detail: e.to_string(),
            })
        })?;
    if chain.is_empty() {
        return Err(invalid(Problem::NoCertificate));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests;
