//! `[detections]`: every threshold and window, with its default, and the state directory.
//!
//! ```toml
//! [detections]
//! state_dir = "/var/lib/exfilmon"  # first-contact state (default); relative to the config file
//! tick_secs = 10                   # the class counters are read this often (1..=3600)
//! include_domestic = false         # asymmetry and volume for home countries too
//!
//! [detections.first_contact]
//! enabled = true
//!
//! [detections.asymmetry]
//! enabled = true
//! window_secs = 3600               # a multiple of tick_secs
//! ratio = 10.0                     # outbound bytes more than ratio × inbound bytes...
//! min_bytes = 104857600            # ...and at least this many outbound bytes (100 MiB)
//!
//! [detections.beaconing]
//! enabled = true
//! min_flows = 5                    # this many small flows in a row at regular intervals
//! max_flow_bytes = 65536           # a flow of at most this many bytes (both directions) is small
//! max_jitter = 0.1                 # every interval within ±10% of their mean
//! min_interval_secs = 5
//! max_interval_secs = 86400
//! max_entries = 65536              # destinations remembered; the least recently seen go first
//!
//! [detections.volume]
//! enabled = true
//! window_secs = 3600               # a multiple of tick_secs
//! min_bytes = 1073741824           # outbound bytes per group and country in a window (1 GiB)
//!
//! [detections.dns_tunnel]
//! enabled = true
//! window_secs = 60                 # per inside client, fixed windows (any length)
//! min_suspicious = 20              # this many long or high-entropy names in a window...
//! max_label_len = 50               # ...a label (left of the last two) this long, or
//! max_name_len = 120               # ...a name this long, is long
//! entropy_min_len = 32             # a label this long with at least entropy_bits bits
//! entropy_bits = 4.0               # per character is high-entropy
//! max_answers = 1200               # this many answers in a window (20/s at 60 s)
//! max_txt_bytes = 65536            # TXT and NULL answer bytes in a window
//! max_entries = 65536              # clients remembered; the least recently seen go first
//! ```

use std::{
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigError, Location};

/// The default `[detections] state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/exfilmon";

/// Longest window and beaconing interval: a week.
const WEEK_SECS: i64 = 7 * 86_400;

/// `[detections]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Detections {
    /// Where the first-contact state is kept (`state_dir`), resolved against the config
    /// file's directory. Default: `/var/lib/exfilmon`. Changing it needs a restart.
    pub state_dir: PathBuf,
    /// How often the daemon reads the class counters (`tick_secs`). Default: 10 s;
    /// 1..=3600 s. Ticks fall on multiples of it since the Unix epoch.
    pub tick: Duration,
    /// Asymmetry and volume also for `[home] countries`. Default: false.
    pub include_domestic: bool,
    pub first_contact: FirstContact,
    pub asymmetry: Asymmetry,
    pub beaconing: Beaconing,
    pub volume: Volume,
    pub dns_tunnel: DnsTunnel,
}

/// `[detections.dns_tunnel]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsTunnel {
    /// Default: true.
    pub enabled: bool,
    /// `window_secs`: default 60 s; 1 s to a week.
    pub window: Duration,
    /// Long or high-entropy names per client and window that fire. Default: 20.
    pub min_suspicious: u64,
    /// A label left of the name's last two this long is long. Default: 50; 8..=63.
    pub max_label_len: usize,
    /// A name this long is long. Default: 120; 16..=253.
    pub max_name_len: usize,
    /// Labels shorter than this are never high-entropy. Default: 32 (a random base32
    /// label of 32 has about 4.2 bits per character, wordy names of that length 3.9-4.1);
    /// 8..=63.
    pub entropy_min_len: usize,
    /// Bits per character from which a label is high-entropy. Default: 4.0; 1..=6.
    pub entropy_bits: f64,
    /// Answers per client and window that fire. Default: 1200.
    pub max_answers: u64,
    /// TXT and NULL answer bytes per client and window that fire. Default: 64 KiB.
    pub max_txt_bytes: u64,
    /// Clients remembered at most. Default: 65536; 1..=1048576.
    pub max_entries: usize,
}

impl Default for DnsTunnel {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_mins(1),
            min_suspicious: 20,
            max_label_len: 50,
            max_name_len: 120,
            entropy_min_len: 32,
            entropy_bits: 4.0,
            max_answers: 1200,
            max_txt_bytes: 64 << 10,
            max_entries: 65_536,
        }
    }
}

/// `[detections.first_contact]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstContact {
    /// Default: true.
    pub enabled: bool,
}

/// `[detections.asymmetry]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Asymmetry {
    /// Default: true.
    pub enabled: bool,
    /// `window_secs`: default 3600 s; a multiple of `tick_secs`, at most a week.
    pub window: Duration,
    /// Outbound bytes must exceed `ratio` × inbound bytes. Default: 10; 1..=1e9.
    pub ratio: f64,
    /// And be at least this many. Default: 100 MiB; at least 1.
    pub min_bytes: u64,
}

/// `[detections.beaconing]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Beaconing {
    /// Default: true.
    pub enabled: bool,
    /// Small flows in a row at regular intervals that make a beacon. Default: 5; 3..=1000.
    pub min_flows: usize,
    /// A flow of at most this many bytes (both directions) is small. Default: 64 KiB.
    pub max_flow_bytes: u64,
    /// Every interval between flow starts within ±`max_jitter` × their mean. Default: 0.1;
    /// 0..=1.
    pub max_jitter: f64,
    /// `min_interval_secs`: intervals shorter than this break a pattern. Default: 5 s.
    pub min_interval: Duration,
    /// `max_interval_secs`: intervals longer than this break a pattern. Default: a day.
    pub max_interval: Duration,
    /// Destinations remembered at most; the least recently seen are evicted (and
    /// counted). Default: 65536; 1..=1048576.
    pub max_entries: usize,
}

/// `[detections.volume]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Default: true.
    pub enabled: bool,
    /// `window_secs`: default 3600 s; a multiple of `tick_secs`, at most a week.
    pub window: Duration,
    /// Outbound bytes per group and country in a window that make an event. Default: 1 GiB.
    pub min_bytes: u64,
}

impl Default for Detections {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            tick: Duration::from_secs(10),
            include_domestic: false,
            first_contact: FirstContact { enabled: true },
            asymmetry: Asymmetry {
                enabled: true,
                window: Duration::from_hours(1),
                ratio: 10.0,
                min_bytes: 100 << 20,
            },
            beaconing: Beaconing {
                enabled: true,
                min_flows: 5,
                max_flow_bytes: 64 << 10,
                max_jitter: 0.1,
                min_interval: Duration::from_secs(5),
                max_interval: Duration::from_hours(24),
                max_entries: 65_536,
            },
            volume: Volume {
                enabled: true,
                window: Duration::from_hours(1),
                min_bytes: 1 << 30,
            },
            dns_tunnel: DnsTunnel::default(),
        }
    }
}

/// What is wrong with a `[detections]` key, beyond a plain integer range.
#[derive(Debug, thiserror::Error)]
pub enum DetectConfigError {
    #[error("{value} is not a multiple of detections.tick_secs ({tick})")]
    NotMultiple { value: u64, tick: u64 },
    #[error("does not divide the default detections.{key} ({value}): set {key}")]
    DefaultWindow { key: String, value: u64 },
    #[error("{value} is out of range (must be {min}..={max})")]
    Float { value: f64, min: f64, max: f64 },
    #[error("{value} is less than min_interval_secs ({min})")]
    Interval { value: u64, min: u64 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDetections {
    state_dir: Option<Spanned<String>>,
    tick_secs: Option<Spanned<i64>>,
    include_domestic: Option<bool>,
    first_contact: Option<RawFirstContact>,
    asymmetry: Option<RawAsymmetry>,
    beaconing: Option<RawBeaconing>,
    volume: Option<RawVolume>,
    dns_tunnel: Option<RawDnsTunnel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsTunnel {
    enabled: Option<bool>,
    window_secs: Option<Spanned<i64>>,
    min_suspicious: Option<Spanned<i64>>,
    max_label_len: Option<Spanned<i64>>,
    max_name_len: Option<Spanned<i64>>,
    entropy_min_len: Option<Spanned<i64>>,
    entropy_bits: Option<Spanned<f64>>,
    max_answers: Option<Spanned<i64>>,
    max_txt_bytes: Option<Spanned<i64>>,
    max_entries: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFirstContact {
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsymmetry {
    enabled: Option<bool>,
    window_secs: Option<Spanned<i64>>,
    ratio: Option<Spanned<f64>>,
    min_bytes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBeaconing {
    enabled: Option<bool>,
    min_flows: Option<Spanned<i64>>,
    max_flow_bytes: Option<Spanned<i64>>,
    max_jitter: Option<Spanned<f64>>,
    min_interval_secs: Option<Spanned<i64>>,
    max_interval_secs: Option<Spanned<i64>>,
    max_entries: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVolume {
    enabled: Option<bool>,
    window_secs: Option<Spanned<i64>>,
    min_bytes: Option<Spanned<i64>>,
}

/// Where a key is: makes a location of a span and key path.
type At<'a> = &'a dyn Fn(&Range<usize>, String) -> Box<Location>;

struct Check<'a> {
    at: At<'a>,
    /// Where `tick_secs` is, for a default window it does not divide.
    tick_span: Range<usize>,
}

impl Check<'_> {
    /// The integer at `key` within `min..=max`, or `default` when absent.
    fn int(
        &self,
        v: Option<&Spanned<i64>>,
        key: &str,
        default: u64,
        (min, max): (i64, i64),
    ) -> Result<u64, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        let value = *v.get_ref();
        if (min..=max).contains(&value) {
            Ok(value.unsigned_abs())
        } else {
            Err(ConfigError::OutOfRange {
                at: (self.at)(&v.span(), format!("detections.{key}")),
                value,
                min,
                max,
            })
        }
    }

    fn float(
        &self,
        v: Option<&Spanned<f64>>,
        key: &str,
        default: f64,
        (min, max): (f64, f64),
    ) -> Result<f64, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        let value = *v.get_ref();
        if value.is_finite() && (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(self.problem(&v.span(), key, DetectConfigError::Float { value, min, max }))
        }
    }

    /// A window: seconds, a multiple of the tick.
    fn window(
        &self,
        v: Option<&Spanned<i64>>,
        key: &str,
        default: Duration,
        tick: Duration,
    ) -> Result<Duration, ConfigError> {
        let secs = self.int(v, key, default.as_secs(), (1, WEEK_SECS))?;
        if secs % tick.as_secs() == 0 {
            return Ok(Duration::from_secs(secs));
        }
        Err(match v {
            Some(v) => self.problem(
                &v.span(),
                key,
                DetectConfigError::NotMultiple {
                    value: secs,
                    tick: tick.as_secs(),
                },
            ),
            None => self.problem(
                &self.tick_span,
                "tick_secs",
                DetectConfigError::DefaultWindow {
                    key: key.to_owned(),
                    value: secs,
                },
            ),
        })
    }

    fn problem(&self, span: &Range<usize>, key: &str, problem: DetectConfigError) -> ConfigError {
        ConfigError::Detections {
            at: (self.at)(span, format!("detections.{key}")),
            problem,
        }
    }
}

/// Validates `[detections]`; `dir` is the config file's directory, `at` makes locations.
pub(crate) fn validate(
    raw: Option<&RawDetections>,
    dir: &Path,
    at: At<'_>,
) -> Result<Detections, ConfigError> {
    let d = Detections::default();
    let Some(r) = raw else { return Ok(d) };
    let c = Check {
        at,
        tick_span: r.tick_secs.as_ref().map_or(0..0, Spanned::span),
    };
    let state_dir = match &r.state_dir {
        None => d.state_dir,
        Some(s) if s.get_ref().is_empty() => {
            return Err(ConfigError::EmptyPath {
                at: at(&s.span(), "detections.state_dir".to_owned()),
            });
        }
        Some(s) => dir.join(s.get_ref()),
    };
    let tick = Duration::from_secs(c.int(
        r.tick_secs.as_ref(),
        "tick_secs",
        d.tick.as_secs(),
        (1, 3600),
    )?);
    let first_contact = FirstContact {
        enabled: r
            .first_contact
            .as_ref()
            .and_then(|f| f.enabled)
            .unwrap_or(d.first_contact.enabled),
    };
    let asymmetry = match &r.asymmetry {
        None => Asymmetry {
            window: c.window(None, "asymmetry.window_secs", d.asymmetry.window, tick)?,
            ..d.asymmetry
        },
        Some(a) => Asymmetry {
            enabled: a.enabled.unwrap_or(d.asymmetry.enabled),
            window: c.window(
                a.window_secs.as_ref(),
                "asymmetry.window_secs",
                d.asymmetry.window,
                tick,
            )?,
            ratio: c.float(
                a.ratio.as_ref(),
                "asymmetry.ratio",
                d.asymmetry.ratio,
                (1.0, 1e9),
            )?,
            min_bytes: c.int(
                a.min_bytes.as_ref(),
                "asymmetry.min_bytes",
                d.asymmetry.min_bytes,
                (1, i64::MAX),
            )?,
        },
    };
    let volume = match &r.volume {
        None => Volume {
            window: c.window(None, "volume.window_secs", d.volume.window, tick)?,
            ..d.volume
        },
        Some(v) => Volume {
            enabled: v.enabled.unwrap_or(d.volume.enabled),
            window: c.window(
                v.window_secs.as_ref(),
                "volume.window_secs",
                d.volume.window,
                tick,
            )?,
            min_bytes: c.int(
                v.min_bytes.as_ref(),
                "volume.min_bytes",
                d.volume.min_bytes,
                (1, i64::MAX),
            )?,
        },
    };
    let beaconing = match &r.beaconing {
        None => d.beaconing,
        Some(b) => beaconing(&c, b, &d.beaconing)?,
    };
    let dns_tunnel = match &r.dns_tunnel {
        None => d.dns_tunnel,
        Some(t) => dns_tunnel(&c, t, &d.dns_tunnel)?,
    };
    Ok(Detections {
        state_dir,
        tick,
        include_domestic: r.include_domestic.unwrap_or(d.include_domestic),
        first_contact,
        asymmetry,
        beaconing,
        volume,
        dns_tunnel,
    })
}

fn dns_tunnel(c: &Check<'_>, t: &RawDnsTunnel, d: &DnsTunnel) -> Result<DnsTunnel, ConfigError> {
    let usize_of = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let int = |v: Option<&Spanned<i64>>, key: &str, default: u64, range: (i64, i64)| {
        c.int(v, &format!("dns_tunnel.{key}"), default, range)
    };
    Ok(DnsTunnel {
        enabled: t.enabled.unwrap_or(d.enabled),
        window: Duration::from_secs(int(
            t.window_secs.as_ref(),
            "window_secs",
            d.window.as_secs(),
            (1, WEEK_SECS),
        )?),
        min_suspicious: int(
            t.min_suspicious.as_ref(),
            "min_suspicious",
            d.min_suspicious,
            (1, i64::MAX),
        )?,
        max_label_len: usize_of(int(
            t.max_label_len.as_ref(),
            "max_label_len",
            d.max_label_len as u64,
            (8, 63),
        )?),
        max_name_len: usize_of(int(
            t.max_name_len.as_ref(),
            "max_name_len",
            d.max_name_len as u64,
            (16, 253),
        )?),
        entropy_min_len: usize_of(int(
            t.entropy_min_len.as_ref(),
            "entropy_min_len",
            d.entropy_min_len as u64,
            (8, 63),
        )?),
        entropy_bits: c.float(
            t.entropy_bits.as_ref(),
            "dns_tunnel.entropy_bits",
            d.entropy_bits,
            (1.0, 6.0),
        )?,
        max_answers: int(
            t.max_answers.as_ref(),
            "max_answers",
            d.max_answers,
            (1, i64::MAX),
        )?,
        max_txt_bytes: int(
            t.max_txt_bytes.as_ref(),
            "max_txt_bytes",
            d.max_txt_bytes,
            (1, i64::MAX),
        )?,
        max_entries: usize_of(int(
            t.max_entries.as_ref(),
            "max_entries",
            d.max_entries as u64,
            (1, 1 << 20),
        )?),
    })
}

fn beaconing(c: &Check<'_>, b: &RawBeaconing, d: &Beaconing) -> Result<Beaconing, ConfigError> {
    let usize_of = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let min_interval = c.int(
        b.min_interval_secs.as_ref(),
        "beaconing.min_interval_secs",
        d.min_interval.as_secs(),
        (1, WEEK_SECS),
    )?;
    let max_interval = c.int(
        b.max_interval_secs.as_ref(),
        "beaconing.max_interval_secs",
        d.max_interval.as_secs(),
        (1, WEEK_SECS),
    )?;
    if max_interval < min_interval {
        let span = b
            .max_interval_secs
            .as_ref()
            .or(b.min_interval_secs.as_ref())
            .map_or(0..0, Spanned::span);
        let key = if b.max_interval_secs.is_some() {
            "beaconing.max_interval_secs"
        } else {
            "beaconing.min_interval_secs"
        };
        return Err(c.problem(
            &span,
            key,
            DetectConfigError::Interval {
                value: max_interval,
                min: min_interval,
            },
        ));
    }
    Ok(Beaconing {
        enabled: b.enabled.unwrap_or(d.enabled),
        min_flows: usize_of(c.int(
            b.min_flows.as_ref(),
            "beaconing.min_flows",
            d.min_flows as u64,
            (3, 1000),
        )?),
        max_flow_bytes: c.int(
            b.max_flow_bytes.as_ref(),
            "beaconing.max_flow_bytes",
            d.max_flow_bytes,
            (1, i64::MAX),
        )?,
        max_jitter: c.float(
            b.max_jitter.as_ref(),
            "beaconing.max_jitter",
            d.max_jitter,
            (0.0, 1.0),
        )?,
        min_interval: Duration::from_secs(min_interval),
        max_interval: Duration::from_secs(max_interval),
        max_entries: usize_of(c.int(
            b.max_entries.as_ref(),
            "beaconing.max_entries",
            d.max_entries as u64,
            (1, 1 << 20),
        )?),
    })
}
