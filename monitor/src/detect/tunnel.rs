//! DNS-tunnel signs, per inside client, over fixed windows of `[detections.dns_tunnel]
//! window_secs`: names with long labels, names with high-entropy labels (both looked for
//! left of the name's last two labels, where a tunnel puts its data), the answer rate, and
//! the TXT/NULL bytes answered (where a tunnel puts its downstream data). A client fires
//! at most once a window, with the first sign that crossed its threshold.
//!
//! The source is the DNS answers the kernel copies (from port 53), so a client that
//! resolves past the hook is not seen. State is bounded: `max_entries` clients, the least
//! recently seen evicted first (counted).

use std::{net::IpAddr, num::NonZeroUsize};

use ipnet::IpNet;
use lru::LruCache;
use serde::Serialize;

use super::{Detection, Stamp, What, config::DnsTunnel};

/// Which threshold a client crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sign {
    /// TXT and NULL answer bytes at least `max_txt_bytes`.
    TxtVolume,
    /// At least `min_suspicious` names with a label of `max_label_len` or more, or a name
    /// of `max_name_len` or more.
    LongNames,
    /// At least `min_suspicious` names with a label of `entropy_min_len` or more whose
    /// entropy is at least `entropy_bits` per character.
    HighEntropy,
    /// At least `max_answers` answers.
    AnswerRate,
}

impl Sign {
    pub const ALL: [Sign; 4] = [
        Sign::TxtVolume,
        Sign::LongNames,
        Sign::HighEntropy,
        Sign::AnswerRate,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Sign::TxtVolume => "txt_volume",
            Sign::LongNames => "long_names",
            Sign::HighEntropy => "high_entropy",
            Sign::AnswerRate => "answer_rate",
        }
    }
}

/// One DNS answer as the detection sees it.
#[derive(Clone, Debug)]
pub struct DnsSeen {
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The client the answer went to, and the server that answered.
    pub client: IpAddr,
    pub server: IpAddr,
    /// The question's name.
    pub question: Option<String>,
    pub txt_null_bytes: u64,
}

/// One client's sums over the open window.
#[derive(Debug)]
struct Sums {
    window: u64,
    answers: u64,
    long_names: u64,
    high_entropy: u64,
    txt_null_bytes: u64,
    fired: bool,
    /// The last suspicious name seen, for the event.
    example: Option<String>,
}

impl Sums {
    fn new(window: u64) -> Self {
        Self {
            window,
            answers: 0,
            long_names: 0,
            high_entropy: 0,
            txt_null_bytes: 0,
            fired: false,
            example: None,
        }
    }
}

/// Shannon entropy of `label`'s bytes, in bits per character.
#[must_use]
pub fn entropy(label: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in label.bytes() {
        counts[usize::from(b.to_ascii_lowercase())] += 1;
    }
    #[expect(clippy::cast_precision_loss, reason = "a label is at most 63 bytes")]
    let n = label.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether `name` has a long label (or is long) and whether it has a high-entropy label,
/// looking left of its last two labels.
#[must_use]
pub fn name_signs(name: &str, cfg: &DnsTunnel) -> (bool, bool) {
    let labels: Vec<&str> = name.split('.').collect();
    let data = &labels[..labels.len().saturating_sub(2)];
    let long = name.len() >= cfg.max_name_len || data.iter().any(|l| l.len() >= cfg.max_label_len);
    let random = data
        .iter()
        .any(|l| l.len() >= cfg.entropy_min_len && entropy(l) >= cfg.entropy_bits);
    (long, random)
}

/// The inside networks and the group each belongs to (the longest match wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inside {
    networks: Vec<(IpNet, String)>,
}

impl Inside {
    /// Networks and their group names.
    #[must_use]
    pub fn new(networks: Vec<(IpNet, String)>) -> Self {
        Self { networks }
    }

    #[must_use]
    pub fn from_config(config: &crate::config::Config) -> Self {
        let networks = config
            .inside_networks()
            .map(|(net, slot)| (net, crate::tables::group_name(config, slot).to_owned()))
            .collect();
        Self { networks }
    }

    /// The group of an inside address; `None` outside.
    #[must_use]
    pub fn group(&self, addr: IpAddr) -> Option<&str> {
        crate::tables::longest_match(
            self.networks
                .iter()
                .map(|(net, name)| (*net, name.as_str())),
            addr,
        )
    }
}

/// The clients' sums and the settings they are judged by.
pub struct Tunnels {
    clients: LruCache<IpAddr, Sums>,
    evictions: u64,
}

impl Tunnels {
    #[must_use]
    pub fn new(max_entries: usize) -> Self {
        Self {
            clients: LruCache::new(NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN)),
            evictions: 0,
        }
    }

    /// Applies a new `max_entries` (a reload); the least recently seen clients go first.
    pub fn resize(&mut self, max_entries: usize) {
        let before = self.clients.len();
        self.clients
            .resize(NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN));
        self.evictions += (before - self.clients.len()) as u64;
    }

    /// Clients remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Clients forgotten to make room, since the start.
    #[must_use]
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Adds one answer to `group`'s client `seen.client`; the detection when it crosses a
    /// threshold for the first time in its window.
    pub fn see(&mut self, cfg: &DnsTunnel, group: &str, seen: &DnsSeen) -> Option<Detection> {
        let window_ms = super::ms(cfg.window);
        let window = seen.at_ms / window_ms;
        if !self.clients.contains(&seen.client) && self.clients.len() == self.clients.cap().get() {
            self.evictions += 1;
        }
        let sums = self
            .clients
            .get_or_insert_mut(seen.client, || Sums::new(window));
        if sums.window != window {
            *sums = Sums::new(window);
        }
        sums.answers += 1;
        sums.txt_null_bytes += seen.txt_null_bytes;
        if let Some(name) = &seen.question {
            let (long, random) = name_signs(name, cfg);
            sums.long_names += u64::from(long);
            sums.high_entropy += u64::from(random);
            if long || random {
                sums.example = Some(name.clone());
            }
        }
        if sums.fired {
            return None;
        }
        let sign = if sums.txt_null_bytes >= cfg.max_txt_bytes {
            Sign::TxtVolume
        } else if sums.long_names >= cfg.min_suspicious {
            Sign::LongNames
        } else if sums.high_entropy >= cfg.min_suspicious {
            Sign::HighEntropy
        } else if sums.answers >= cfg.max_answers {
            Sign::AnswerRate
        } else {
            return None;
        };
        sums.fired = true;
        Some(Detection {
            time: Stamp::from_millis(seen.at_ms),
            what: What::DnsTunnel {
                client: seen.client,
                server: seen.server,
                sign,
                window_start: Stamp::from_millis(window * window_ms),
                window_end: Stamp::from_millis((window + 1) * window_ms),
                answers: sums.answers,
                long_names: sums.long_names,
                high_entropy_names: sums.high_entropy,
                txt_null_bytes: sums.txt_null_bytes,
                example: sums.example.clone(),
            },
            group: group.to_owned(),
            country: String::new(),
        })
    }
}

/// Test support: a base32 label of `len` characters, different for each `i` (a xorshift
/// stream), as DNS tunnels encode their data.
#[doc(hidden)]
#[must_use]
pub fn encoded_label(i: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(ALPHABET[(x % 32) as usize])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Contacts, Detector, Settings, config::Detections};

    /// 2026-01-01T00:00:00Z, a minute boundary.
    const T0_MS: u64 = 1_767_225_600_000;
    const PHONE: &str = "192.0.2.10";
    const RESOLVER: &str = "203.0.113.200";

    fn detector() -> Detector {
        Detector::new(
            Settings {
                detections: Detections::default(),
                home: ["IN".to_owned()].into(),
                inside: Inside::new(vec![
                    ("192.0.2.0/24".parse().expect("net"), "ungrouped".to_owned()),
                    ("192.0.2.0/26".parse().expect("net"), "phones".to_owned()),
                ]),
            },
            Contacts::new(),
        )
    }

    fn answer(at_ms: u64, client: &str, question: &str, txt: u64) -> DnsSeen {
        DnsSeen {
            at_ms,
            client: client.parse().expect("ip"),
            server: RESOLVER.parse().expect("ip"),
            question: Some(question.to_owned()),
            txt_null_bytes: txt,
        }
    }

    #[test]
    fn entropy_is_bits_per_character() {
        assert!(entropy("aaaaaaaa").abs() < 1e-9);
        assert!((entropy("abcdefghijklmnop") - 4.0).abs() < 1e-9);
        assert!((entropy("ABab") - 1.0).abs() < 1e-9, "case does not count");
    }

    #[test]
    fn ordinary_names_show_no_sign_and_encoded_ones_do() {
        let cfg = DnsTunnel::default();
        for name in [
            "www.example.com",
            "api.account.xiaomi.com",
            "e1234.dscb.akamaiedge.net",
            "my-loadbalancer-1234567890.us-west-2.elb.amazonaws.com",
            "_dmarc.mail.example.org",
            "a-very-long-but-wordy-subdomain-name.example.com",
        ] {
            assert_eq!(name_signs(name, &cfg), (false, false), "{name}");
        }
        let random = format!("{}.t.example.com", encoded_label(1, 32));
        assert_eq!(name_signs(&random, &cfg), (false, true));
        let long = format!("{}.t.example.com", "a".repeat(55));
        assert_eq!(name_signs(&long, &cfg), (true, false));
        // The registered domain itself is not data: a long second-level name is no sign.
        assert_eq!(
            name_signs(&format!("{}.com", encoded_label(2, 40)), &cfg),
            (false, false)
        );
    }

    #[test]
    fn a_client_sending_encoded_names_fires_once_a_window() {
        let mut d = detector();
        let mut fired = Vec::new();
        for i in 0..45 {
            let name = format!("{}.t.example.com", encoded_label(i, 40));
            fired.extend(d.dns(&answer(T0_MS + i * 1000, PHONE, &name, 0)));
        }
        assert_eq!(fired.len(), 1, "once in the first minute: {fired:?}");
        let What::DnsTunnel {
            sign,
            high_entropy_names,
            client,
            ..
        } = &fired[0].what
        else {
            panic!("a DNS tunnel: {fired:?}");
        };
        assert_eq!(*sign, Sign::HighEntropy);
        assert_eq!(*high_entropy_names, 20, "at the 20th name");
        assert_eq!(client.to_string(), PHONE);
        assert_eq!(fired[0].group, "phones");
        // The next window counts afresh.
        let again: Vec<_> = (0..20)
            .filter_map(|i| {
                let name = format!("{}.t.example.com", encoded_label(100 + i, 40));
                d.dns(&answer(T0_MS + 60_000 + i * 100, PHONE, &name, 0))
            })
            .collect();
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn txt_volume_and_answer_rate_fire_and_ordinary_use_stays_silent() {
        let mut d = detector();
        // Ordinary: 1,000 answers a minute of everyday names.
        for i in 0..1000 {
            let name = ["www.example.com", "mail.example.org", "cdn.example.net"][i % 3];
            assert_eq!(d.dns(&answer(T0_MS + i as u64 * 50, PHONE, name, 0)), None);
        }
        // TXT data: 64 KiB in 40 answers.
        let txt: Vec<_> = (0..40)
            .filter_map(|i| {
                d.dns(&answer(
                    T0_MS + 60_000 + i,
                    "192.0.2.11",
                    "x.example.com",
                    1700,
                ))
            })
            .collect();
        assert!(matches!(
            txt[..],
            [Detection {
                what: What::DnsTunnel {
                    sign: Sign::TxtVolume,
                    ..
                },
                ..
            }]
        ));
        // Rate: 1,200 answers in a minute.
        let rate: Vec<_> = (0..1200)
            .filter_map(|i| {
                d.dns(&answer(
                    T0_MS + 120_000 + i,
                    "192.0.2.12",
                    "www.example.com",
                    0,
                ))
            })
            .collect();
        assert!(matches!(
            rate[..],
            [Detection {
                what: What::DnsTunnel {
                    sign: Sign::AnswerRate,
                    answers: 1200,
                    ..
                },
                ..
            }]
        ));
    }

    #[test]
    fn outside_clients_and_a_disabled_detection_are_ignored() {
        let mut d = detector();
        let names: Vec<String> = (0..30)
            .map(|i| format!("{}.t.example.com", encoded_label(i, 40)))
            .collect();
        let outside = names
            .iter()
            .filter_map(|n| d.dns(&answer(T0_MS, "198.51.100.7", n, 0)))
            .count();
        assert_eq!(outside, 0, "a client outside the home networks is nobody's");
        let ungrouped = names
            .iter()
            .filter_map(|n| d.dns(&answer(T0_MS, "192.0.2.200", n, 0)))
            .collect::<Vec<_>>();
        assert_eq!(ungrouped.len(), 1);
        assert_eq!(ungrouped[0].group, "ungrouped");
        let mut settings = d.settings().clone();
        settings.detections.dns_tunnel.enabled = false;
        d.configure(settings);
        assert!(
            names
                .iter()
                .all(|n| d.dns(&answer(T0_MS + 60_000, PHONE, n, 0)).is_none())
        );
    }

    #[test]
    fn clients_are_bounded_and_evictions_counted() {
        let mut t = Tunnels::new(2);
        let cfg = DnsTunnel::default();
        for c in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.1"] {
            t.see(&cfg, "phones", &answer(T0_MS, c, "www.example.com", 0));
        }
        assert_eq!(t.len(), 2);
        assert_eq!(t.evictions(), 2);
    }
}
