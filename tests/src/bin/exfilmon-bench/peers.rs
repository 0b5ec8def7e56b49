//! stub
use serde::Serialize;
pub struct PeerArgs { pub packets: u64, pub rate: u64, pub rounds: usize, pub cpu: usize }
#[derive(Serialize)]
pub struct PeersReport {}
pub fn run(_a: &PeerArgs, _d: &std::path::Path) -> anyhow::Result<PeersReport> { anyhow::bail!("todo") }
pub fn print_table(_r: &PeersReport) {}
