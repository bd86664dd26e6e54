#!/bin/sh
# Cross-compiling the Rust images for another architecture without emulation: the build stage
# runs on the builder's own platform ($BUILDPLATFORM) and compiles for $TARGETARCH (amd64 or
# arm64, set by `docker buildx build --platform ...`). ring's C and assembly need the target's
# gcc, which Debian packages as gcc-<arch>-linux-gnu.
#
#   cross.sh setup             install the target's toolchain (a no-op for a native build)
#   cross.sh build PKG BIN     cargo build --release of BIN in PKG; the binary lands in /out/BIN
set -eu

case "${TARGETARCH:-$(dpkg --print-architecture)}" in
  amd64) triple=x86_64-unknown-linux-gnu gnu=x86_64-linux-gnu gcc_pkg=gcc-x86-64-linux-gnu ;;
  arm64) triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu gcc_pkg=gcc-aarch64-linux-gnu ;;
  *) echo "cross.sh: unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;;
esac
native=false
[ "${TARGETARCH:-$(dpkg --print-architecture)}" = "$(dpkg --print-architecture)" ] && native=true

case "${1:-}" in
  setup)
    if [ "$native" = false ]; then
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "$gcc_pkg" "libc6-dev-${TARGETARCH}-cross"
      rm -rf /var/lib/apt/lists/*
    fi
    rustup target add "$triple"
    ;;
  build)
    pkg=$2 bin=$3
    if [ "$native" = false ]; then
      upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
      export "CARGO_TARGET_${upper}_LINKER=${gnu}-gcc"
      export "CC_$(echo "$triple" | tr '-' '_')=${gnu}-gcc"
    fi
    cargo build --release --locked --target "$triple" -p "$pkg" --bin "$bin"
    install -D "target/$triple/release/$bin" "/out/$bin"
    ;;
  *) echo "usage: cross.sh setup | build PKG BIN" >&2; exit 2 ;;
esac
