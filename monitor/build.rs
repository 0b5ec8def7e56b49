use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The kernel crate's toolchain; scripts/setup.sh installs it and bpf-linker against it.
const EBPF_TOOLCHAIN: &str = "nightly-2026-10-30";

fn main() -> anyhow::Result<()> {
    // `cargo fuzz` builds with `--cfg fuzzing`, and with sanitizer and coverage flags in
    // RUSTFLAGS that have no business in the nested bpf build. The fuzz targets only parse
    // and never load the programs, so a fuzz build embeds an empty object instead of
    // building one (loading it fails with aya's object parse error, should anything try).
    println!("cargo::rerun-if-env-changed=CARGO_CFG_FUZZING");
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
        let object = std::path::Path::new(&out_dir).join("monitor-ebpf");
        std::fs::write(&object, b"").with_context(|| format!("writing {}", object.display()))?;
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "monitor-ebpf")
        .ok_or_else(|| anyhow!("monitor-ebpf package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let root_dir = manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
        .as_str();
    aya_build::build_ebpf(
        [Package {
            name: name.as_str(),
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
