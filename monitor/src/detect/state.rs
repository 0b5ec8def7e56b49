//! The first-contact state: which foreign countries each group has reached, and when it
//! first did, kept in `<state_dir>/first-contact.json` across restarts.
//!
//! The file is written whole to a temporary file in the same directory, flushed to disk and
//! renamed over the old one, so a crash leaves the old file or the new one, never half of
//! one. A file that is there but cannot be parsed (corrupt, or of another version) is set
//! aside as `first-contact.json.corrupt-<unix seconds>` with a warning, and the daemon starts
//! with no known contacts: a monitor that refused to start would see nothing at all, and the
//! cost of starting afresh is that each group's foreign countries are reported once more.
//! A file that cannot be read at all (permissions, I/O) is an error naming it.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// The state file's name in `state_dir`.
pub const FILE_NAME: &str = "first-contact.json";
/// The version this daemon reads and writes.
pub const VERSION: u32 = 1;
/// More (group, country) pairs than this cannot come from a valid config (32 groups × 512
/// country slots): such a file is taken as corrupt.
const MAX_PAIRS: usize = 32 * 512;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state directory {}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the state file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set the corrupt state file {} aside", path.display())]
    SetAside {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the state file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The (group, foreign country) pairs seen, with the Unix second of the first contact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contacts {
    /// The file's version, [`VERSION`].
    v: u32,
    /// Group name → country code → first contact (Unix seconds).
    contacts: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Contacts {
    #[must_use]
    pub fn new() -> Self {
        Self {
            v: VERSION,
            contacts: BTreeMap::new(),
        }
    }

    /// Records a contact; true when the pair was not known.
    pub fn insert(&mut self, group: &str, country: &str, at: SystemTime) -> bool {
        let countries = self.contacts.entry(group.to_owned()).or_default();
        if countries.contains_key(country) {
            return false;
        }
        let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        countries.insert(country.to_owned(), secs);
        true
    }

    #[must_use]
    pub fn contains(&self, group: &str, country: &str) -> bool {
        self.contacts
            .get(group)
            .is_some_and(|c| c.contains_key(country))
    }

    /// Every (group, country, first contact in Unix seconds).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.contacts.iter().flat_map(|(g, cs)| {
            cs.iter()
                .map(move |(c, secs)| (g.as_str(), c.as_str(), *secs))
        })
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.contacts.values().map(BTreeMap::len).sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses a state file's text; `None` when it is not a valid state of this version.
    fn parse(text: &[u8]) -> Option<Self> {
        let c: Self = serde_json::from_slice(text).ok()?;
        let plausible = c.v == VERSION
            && c.len() <= MAX_PAIRS
            && c.iter().all(|(g, country, _)| {
                !g.is_empty() && g.len() <= 32 && country.len() == 2 && country.is_ascii()
            });
        plausible.then_some(c)
    }
}

/// What [`load`] found.
#[derive(Debug)]
pub struct Loaded {
    pub contacts: Contacts,
    /// Where a corrupt file was moved to, if there was one.
    pub set_aside: Option<PathBuf>,
}

/// The state file in `dir`.
#[must_use]
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Creates `dir` if needed and reads its state file: none yet means no known contacts; a
/// corrupt one is set aside (see the module's docs).
pub fn load(dir: &Path) -> Result<Loaded, StateError> {
    std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    let file = path(dir);
    let text = match std::fs::read(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded {
                contacts: Contacts::new(),
                set_aside: None,
            });
        }
        Err(source) => return Err(StateError::Read { path: file, source }),
    };
    if let Some(contacts) = Contacts::parse(&text) {
        return Ok(Loaded {
            contacts,
            set_aside: None,
        });
    }
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = dir.join(format!("{FILE_NAME}.corrupt-{secs}"));
    std::fs::rename(&file, &aside).map_err(|source| StateError::SetAside { path: file, source })?;
    Ok(Loaded {
        contacts: Contacts::new(),
        set_aside: Some(aside),
    })
}

/// Writes `contacts` to `dir`'s state file atomically: a temporary file in `dir`, synced,
/// renamed over the old one.
pub fn save(dir: &Path, contacts: &Contacts) -> Result<(), StateError> {
    let file = path(dir);
    let err = |source| StateError::Write {
        path: file.clone(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".first-contact.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    serde_json::to_writer_pretty(&mut tmp, contacts).map_err(|e| err(e.into()))?;
    tmp.write_all(b"\n").map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(&file).map_err(|e| err(e.error))?;
    // The rename itself is made durable by syncing the directory.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
}
