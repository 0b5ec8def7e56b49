//! HTTP basic auth against bcrypt hashes, as exporter-toolkit does it, with two bounds:
//! bcrypt runs on one blocking thread at a time ([`BCRYPT_SLOTS`]), so a flood of wrong
//! passwords costs at most one core; and a password once verified is remembered (by a
//! SHA-256 of user, password and hash, never the password itself), so a scraper that
//! comes back every 15 s pays bcrypt once, and still gets in during such a flood.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use base64::Engine as _;
use prometheus::IntCounterVec;
use tokio::sync::Semaphore;

/// bcrypt checks that may run at once.
pub const BCRYPT_SLOTS: usize = 1;

/// Verified passwords remembered; when full, the memory starts afresh.
const CACHE_ENTRIES: usize = 64;

/// The `WWW-Authenticate` challenge of a 401.
pub const CHALLENGE: &str = "Basic realm=\"exfilmon\", charset=\"UTF-8\"";

/// The users of a web config and what was verified.
pub struct Auth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
    slots: Semaphore,
    /// bcrypt checks running now, and the most that ever ran at once.
    running: AtomicUsize,
    peak: AtomicUsize,
    /// `exfilmon_http_basic_auth_total{result}`.
    results: IntCounterVec,
}

/// The outcome of one check, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A password verified before: no bcrypt.
    Cached,
    /// bcrypt ran and the password matched.
    Verified,
    /// No or malformed credentials, an unknown user or a wrong password.
    Refused,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Cached, Outcome::Verified, Outcome::Refused];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Cached => "cached",
            Outcome::Verified => "verified",
            Outcome::Refused => "refused",
        }
    }
}

impl Auth {
    /// `users` maps user names to bcrypt hashes (validated by the web config); it must
    /// not be empty.
    #[must_use]
    pub fn new(users: BTreeMap<String, String>, results: IntCounterVec) -> Self {
        Self {
            users,
            verified: Mutex::new(HashSet::new()),
            slots: Semaphore::new(BCRYPT_SLOTS),
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            results,
        }
    }

    /// The most bcrypt checks that ran at once so far.
    #[must_use]
    pub fn peak_concurrency(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Checks an `Authorization` header.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> Outcome {
        let outcome = self.decide(authorization).await;
        self.results.with_label_values(&[outcome.name()]).inc();
        outcome
    }

    async fn decide(&self, authorization: Option<&HeaderValue>) -> Outcome {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Outcome::Refused;
        };
        // An unknown user costs a bcrypt check too (against the first user's hash, and
        // refused whatever it says), so the time taken does not tell which users exist.
        let (hash, known) = match std::str::from_utf8(&user)
            .ok()
            .and_then(|u| self.users.get(u))
        {
            Some(h) => (h.clone(), true),
            None => match self.users.values().next() {
                Some(h) => (h.clone(), false),
                None => return Outcome::Refused,
            },
        };
        let key = cache_key(&user, &password, &hash);
        if known && self.lock().contains(&key) {
            return Outcome::Cached;
        }
        let Ok(_slot) = self.slots.acquire().await else {
            return Outcome::Refused;
        };
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let matched =
            tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        self.running.fetch_sub(1, Ordering::SeqCst);
        if !(matched && known) {
            return Outcome::Refused;
        }
        let mut verified = self.lock();
        if verified.len() >= CACHE_ENTRIES {
            verified.clear();
        }
        verified.insert(key);
        Outcome::Verified
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The middleware: a request without the right credentials gets a 401 with a challenge.
pub async fn require(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    match auth
        .check(request.headers().get(header::AUTHORIZATION))
        .await
    {
        Outcome::Cached | Outcome::Verified => next.run(request).await,
        Outcome::Refused => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, CHALLENGE)],
            "Unauthorized\n",
        )
            .into_response(),
    }
}

/// User and password of a `Basic` credential (the scheme in any case), as bytes.
fn basic_credentials(value: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// SHA-256 of the user, the password and the hash, each length-prefixed.
fn cache_key(user: &[u8], password: &[u8], hash: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, password, hash.as_bytes()] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    let mut key = [0; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use prometheus::Opts;

    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("ascii")
    }

    fn auth(cost: u32) -> Arc<Auth> {
        let hash = bcrypt::hash("right", cost).expect("hash");
        let results = IntCounterVec::new(Opts::new("t_total", "t"), &["result"]).expect("metric");
        Arc::new(Auth::new(
            BTreeMap::from([("prom".to_owned(), hash)]),
            results,
        ))
    }

    #[test]
    fn credentials_are_parsed_strictly() {
        let ok = basic_credentials(&header("prom", "a:b")).expect("parsed");
        assert_eq!(ok, (b"prom".to_vec(), b"a:b".to_vec()));
        let lower = HeaderValue::from_static("basic cHJvbTp4");
        assert_eq!(basic_credentials(&lower).expect("parsed").0, b"prom");
        for bad in ["Bearer cHJvbTp4", "Basic", "Basic !!!", "Basic cHJvbQ=="] {
            assert_eq!(
                basic_credentials(&HeaderValue::from_static(bad)),
                None,
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_flood_of_wrong_passwords_runs_bcrypt_one_at_a_time_and_a_verified_scraper_passes() {
        const FLOOD: usize = 16;
        let auth = auth(8);
        let right = header("prom", "right");
        assert_eq!(auth.check(Some(&right)).await, Outcome::Verified);
        assert_eq!(auth.check(Some(&right)).await, Outcome::Cached);
        assert_eq!(auth.check(None).await, Outcome::Refused);
        assert_eq!(
            auth.check(Some(&header("prom", "wrong"))).await,
            Outcome::Refused
        );
        assert_eq!(
            auth.check(Some(&header("nobody", "right"))).await,
            Outcome::Refused
        );

        // One bcrypt check's time, the least of three.
        let hash = bcrypt::hash("x", 8).expect("hash");
        let single = (0..3)
            .map(|_| {
                let t = Instant::now();
                let _ = bcrypt::verify("y", &hash);
                t.elapsed()
            })
            .min()
            .expect("three runs");

        let started = Instant::now();
        let flood: Vec<_> = (0..FLOOD)
            .map(|i| {
                let auth = auth.clone();
                tokio::spawn(async move {
                    auth.check(Some(&header("prom", &format!("guess{i}"))))
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t = Instant::now();
        assert_eq!(auth.check(Some(&right)).await, Outcome::Cached);
        let scrape = t.elapsed();
        for f in flood {
            assert_eq!(f.await.expect("task"), Outcome::Refused);
        }
        let flood_time = started.elapsed();
        println!(
            "basic auth: {FLOOD} wrong passwords at once: bcrypt peak concurrency {}, {flood_time:?} in all ({single:?} per check); the verified scraper passed in {scrape:?} meanwhile",
            auth.peak_concurrency()
        );
        assert_eq!(auth.peak_concurrency(), BCRYPT_SLOTS);
        assert!(
            scrape < single,
            "a remembered password must not wait for the flood's bcrypt checks ({scrape:?})"
        );
        let counted = |o: Outcome| auth.results.with_label_values(&[o.name()]).get();
        assert_eq!(
            (
                counted(Outcome::Verified),
                counted(Outcome::Cached),
                counted(Outcome::Refused)
            ),
            (1, 2, 3 + FLOOD as u64)
        );
    }
}
