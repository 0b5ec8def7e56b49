use std::path::Path;

use super::*;

/// A directory with `server.crt`/`server.key` (ECDSA P-256, for 127.0.0.1) and `ca.crt`.
fn pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = ca.self_signed(&ca_key).expect("ca");
    std::fs::write(dir.path().join("server.crt"), cert.pem()).expect("write");
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("write");
    std::fs::write(dir.path().join("ca.crt"), ca.pem()).expect("write");
    std::fs::write(
        dir.path().join("other.key"),
        rcgen::KeyPair::generate().expect("key").serialize_pem(),
    )
    .expect("write");
    dir
}

/// A cost-4 hash of "secret" (bcrypt's least cost keeps the tests fast).
fn hash() -> String {
    bcrypt::hash("secret", 4).expect("hash")
}

fn parse_in(dir: &Path, text: &str) -> Result<WebConfig, WebConfigError> {
    WebConfig::parse(text, &dir.join("web.yml"))
}

fn err_in(dir: &Path, text: &str) -> String {
    match parse_in(dir, text) {
        Ok(c) => panic!("accepted:\n{text}\n=> {c:?}"),
        Err(e) => crate::error_chain(&e).replace(&format!("{}/", dir.display()), ""),
    }
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

#[test]
fn a_full_file_parses() {
    let dir = pki();
    let text = format!(
        "# exporter-toolkit's layout\n\
         tls_server_config:\n\
        \x20 cert_file: server.crt\n\
        \x20 key_file: server.key\n\
        \x20 client_auth_type: RequireAndVerifyClientCert\n\
        \x20 client_ca_file: ca.crt\n\
        \x20 min_version: TLS12\n\
        \x20 max_version: TLS13\n\
        \x20 cipher_suites:\n\
        \x20   - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n\
        \x20   - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n\
        \x20 prefer_server_cipher_suites: false\n\
        \x20 curve_preferences: [X25519, CurveP256]\n\
         http_server_config:\n\
        \x20 http2: false\n\
        \x20 headers:\n\
        \x20   X-Content-Type-Options: nosniff\n\
        \x20   Strict-Transport-Security: max-age=31536000\n\
        \x20   X-XSS-Protection: \"\"\n\
         basic_auth_users:\n\
        \x20 prometheus: {}\n\
        \x20 grafana: {}\n",
        hash(),
        hash()
    );
    let c = parse_in(dir.path(), &text).expect("valid");
    let tls = c.tls.as_ref().expect("tls");
    assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
    assert_eq!(
        (tls.min_version, tls.max_version),
        (TlsVersion::Tls12, TlsVersion::Tls13)
    );
    assert!(!tls.server.ignore_client_order);
    // The three TLS 1.3 suites, then the two chosen TLS 1.2 ones in the file's order.
    let suites: Vec<String> = tls
        .server
        .crypto_provider()
        .cipher_suites
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    assert_eq!(
        suites[3..],
        [
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        ]
    );
    assert_eq!(suites.len(), 5);
    let groups: Vec<String> = tls
        .server
        .crypto_provider()
        .kx_groups
        .iter()
        .map(|g| format!("{:?}", g.name()))
        .collect();
    assert_eq!(groups, ["X25519", "secp256r1"]);
    assert_eq!(tls.server.alpn_protocols, [b"http/1.1".to_vec()]);
    // The blank header is left out, as in exporter-toolkit.
    let headers: Vec<_> = c
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii")))
        .collect();
    assert_eq!(
        headers,
        [
            ("strict-transport-security", "max-age=31536000"),
            ("x-content-type-options", "nosniff")
        ]
    );
    assert_eq!(
        c.users.keys().collect::<Vec<_>>(),
        ["grafana", "prometheus"]
    );
}

#[test]
fn defaults_and_empty_files() {
    let dir = pki();
    for text in [
        "",
        "# nothing\n",
        "{}\n",
        "tls_server_config:\nbasic_auth_users:\n",
    ] {
        let c = parse_in(dir.path(), text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(
            c.tls.is_none() && c.users.is_empty() && c.headers.is_empty(),
            "{text:?}"
        );
    }
    let c = parse_in(dir.path(), TLS).expect("valid");
    let tls = c.tls.expect("tls");
    assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
    assert_eq!(
        (tls.min_version, tls.max_version),
        (TlsVersion::Tls12, TlsVersion::Tls13)
    );
    assert!(
        tls.server.ignore_client_order,
        "prefer_server_cipher_suites defaults to true"
    );
    assert_eq!(tls.server.crypto_provider().cipher_suites.len(), 9);
    // Basic auth alone, over plain HTTP; inline PEM instead of files.
    let c = parse_in(dir.path(), &format!("basic_auth_users:\n  u: {}\n", hash())).expect("valid");
    assert!(c.tls.is_none() && c.users.len() == 1);
    let cert = std::fs::read_to_string(dir.path().join("server.crt")).expect("read");
    let key = std::fs::read_to_string(dir.path().join("server.key")).expect("read");
    let indent = |s: &str| s.replace('\n', "\n    ");
    let inline = format!(
        "tls_server_config:\n  cert: |\n    {}\n  key: |\n    {}\n  min_version: TLS13\n",
        indent(cert.trim()),
        indent(key.trim())
    );
    let tls = parse_in(dir.path(), &inline)
        .expect("inline PEM")
        .tls
        .expect("tls");
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(tls.server.crypto_provider().cipher_suites.len(), 9);
}

#[test]
#[expect(clippy::too_many_lines, reason = "a table of cases, one line each")]
fn every_bad_key_or_value_names_file_line_and_key() {
    let dir = pki();
    let d = dir.path();
    let cases: Vec<(String, &str)> = vec![
        // YAML and unknown keys.
        ("tls_server_config: [\n".into(), "web.yml:1:"),
        (
            "basic_auth_user:\n  u: x\n".into(),
            "web.yml:1: unknown field `basic_auth_user`",
        ),
        (
            format!("{TLS}  min_versio: TLS12\n"),
            "web.yml:4: unknown field `min_versio`",
        ),
        (
            "http_server_config:\n  header: {}\n".into(),
            "web.yml:2: unknown field `header`",
        ),
        ("http_server_config:\n  http2: maybe\n".into(), "web.yml:2:"),
        // TLS.
        (
            "tls_server_config:\n  min_version: TLS12\n".into(),
            "web.yml:2: tls_server_config: TLS needs cert_file (or cert)",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n".into(),
            "web.yml:2: tls_server_config: TLS needs key_file (or key)",
        ),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n".into(),
            "web.yml:2: tls_server_config.cert_file: cannot read missing.crt: No such file",
        ),
        (
            "tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n".into(),
            "web.yml:2: tls_server_config.cert_file: no PEM certificate found",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n".into(),
            "web.yml:3: tls_server_config.key_file: no PEM private key found",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n".into(),
            "web.yml:3: tls_server_config.key_file: the key does not belong to the certificate",
        ),
        (
            format!("{TLS}  cert: x\n"),
            "web.yml:2: tls_server_config.cert_file: set either cert or cert_file, not both",
        ),
        (
            format!("{TLS}  min_version: TLS11\n"),
            "web.yml:4: tls_server_config.min_version: \"TLS11\" is not supported: exfilmon serves TLS 1.2 and 1.3 only",
        ),
        (
            format!("{TLS}  max_version: TLS10\n"),
            "web.yml:4: tls_server_config.max_version: \"TLS10\" is not supported",
        ),
        (
            format!("{TLS}  min_version: SSL3\n"),
            "web.yml:4: tls_server_config.min_version: unknown TLS version \"SSL3\"",
        ),
        (
            format!("{TLS}  min_version: TLS13\n  max_version: TLS12\n"),
            "web.yml:4: tls_server_config.min_version: min_version TLS13 is above max_version TLS12",
        ),
        (
            format!("{TLS}  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca.crt\n"),
            "web.yml:4: tls_server_config.client_auth_type: RequireAnyClientCert takes client certificates without verifying them",
        ),
        (
            format!("{TLS}  client_auth_type: RequestClientCert\n"),
            "web.yml:4: tls_server_config.client_auth_type: RequestClientCert takes client certificates without verifying them",
        ),
        (
            format!("{TLS}  client_auth_type: Always\n"),
            "web.yml:4: tls_server_config.client_auth_type: unknown client_auth_type \"Always\"",
        ),
        (
            format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n"),
            "web.yml:4: tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file",
        ),
        (
            format!("{TLS}  client_ca_file: ca.crt\n"),
            "web.yml:4: tls_server_config.client_ca_file: client CAs are set but client_auth_type is NoClientCert",
        ),
        (
            format!(
                "{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: server.key\n"
            ),
            "web.yml:5: tls_server_config.client_ca_file: no PEM certificate found",
        ),
        (
            format!(
                "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  client_allowed_sans: [a]\n"
            ),
            "web.yml:6: tls_server_config.client_allowed_sans: client_allowed_sans is not supported",
        ),
        (
            format!("{TLS}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"),
            "web.yml:4: tls_server_config.cipher_suites[0]: \"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA\" is not a TLS 1.2 cipher suite exfilmon offers",
        ),
        (
            format!(
                "{TLS}  cipher_suites:\n    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n    - TLS_AES_128_GCM_SHA256\n"
            ),
            "web.yml:6: tls_server_config.cipher_suites[1]: \"TLS_AES_128_GCM_SHA256\" is a TLS 1.3 suite",
        ),
        (
            format!("{TLS}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"),
            "web.yml:4: tls_server_config.cipher_suites: no cipher suite in the list fits the certificate's ECDSA key",
        ),
        (
            format!("{TLS}  curve_preferences: [X25519, CurveP521]\n"),
            "web.yml:4: tls_server_config.curve_preferences[1]: \"CurveP521\" is not a curve exfilmon offers",
        ),
        // HTTP.
        (
            "http_server_config:\n  http2: true\n".into(),
            "web.yml:2: http_server_config.http2: HTTP/2 is not served",
        ),
        (
            "http_server_config:\n  headers:\n    Server: exfilmon\n".into(),
            "web.yml:3: http_server_config.headers.Server: header \"Server\" cannot be set",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n".into(),
            "web.yml:3: http_server_config.headers.X-Frame-Options: \"allow\" is not allowed for X-Frame-Options (one of: deny, sameorigin)",
        ),
        (
            "http_server_config:\n  headers:\n    Content-Security-Policy: \"a\\nb\"\n".into(),
            "web.yml:3: http_server_config.headers.Content-Security-Policy: \"a\\nb\" is not a valid header value",
        ),
        (
            "rate_limit:\n  interval: 1s\n  burst: 5\n".into(),
            "web.yml:2: rate_limit: rate_limit is not supported",
        ),
        // Users.
        (
            "basic_auth_users:\n  prom: secret\n".into(),
            "web.yml:2: basic_auth_users.prom: the password of \"prom\" is not a bcrypt hash",
        ),
        (
            format!("basic_auth_users:\n  \"a:b\": {}\n", hash()),
            "web.yml:2: basic_auth_users.a:b: user name \"a:b\" contains ':'",
        ),
        (
            format!(
                "basic_auth_users:\n  ok: {}\n  slow: {}\n",
                hash(),
                hash().replacen("$04$", "$15$", 1)
            ),
            "web.yml:3: basic_auth_users.slow: the bcrypt cost of \"slow\" is 15; exfilmon takes 4 to 14",
        ),
        (
            "basic_auth_users:\n  prom:\n".into(),
            "web.yml:2: basic_auth_users.prom: \"prom\" has no password hash",
        ),
    ];
    for (text, want) in &cases {
        let got = err_in(d, text);
        assert!(
            got.starts_with(want),
            "for\n{text}\nwant {want:?}\n got {got:?}"
        );
    }
    println!(
        "web config: {} bad files refused, each naming file, line and key",
        cases.len()
    );
}

#[test]
fn a_missing_file_is_named() {
    let e = WebConfig::load(Path::new("/nonexistent/web.yml")).expect_err("missing");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/web.yml: cannot read the web config: "),
        "{e}"
    );
}
