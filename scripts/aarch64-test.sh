#!/usr/bin/env bash
# aarch64 (ARM64 Linux; the NEON code path of Apple Silicon too) on an x86-64 Linux machine:
# cross-builds the engine for aarch64-unknown-linux-gnu without libobs (`--no-default-features`)
# and runs its tests under qemu-user (emulated, so slow; nothing here measures ARM speed):
# the NEON GEMM block against the scalar one (`--lib`), parity with the TFLite reference on
# the fixtures (`--test parity`). docs/devices.md, "aarch64 / NEON".
#
#   scripts/aarch64-test.sh            build + the tests above (what CI runs)
#   scripts/aarch64-test.sh --engine   also `--test engine` (real photos and clips; ~7 min
#                                      under qemu on the loaded 2-core VM)
#   scripts/aarch64-test.sh --bench    also `ai-background bench` under qemu (emulated time;
#                                      builds the release CLI for aarch64)
#
# Needs Rust with rustup; installs its system packages (scripts/deps.sh --aarch64: the
# aarch64 cross gcc and libc, qemu-user) and the Rust target itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=0
tests=(--lib --test parity)
for arg in "$@"; do
  case "$arg" in
    --engine) tests+=(--test engine) ;;
    --bench) bench=1 ;;
    *) echo "usage: $0 [--engine] [--bench]" >&2; exit 2 ;;
  esac
done

T=aarch64-unknown-linux-gnu
scripts/deps.sh --aarch64

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"

# Output goes to target/aarch64-unknown-linux-gnu/, beside the host builds.
cargo test --locked --target "$T" --no-default-features "${tests[@]}"

if [ "$bench" = 1 ]; then
  cargo build --locked --release --target "$T" --no-default-features --bin ai-background
  echo "emulated (qemu-aarch64 on this x86-64 CPU), not ARM speed:"
  $CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER "target/$T/release/ai-background" \
    bench --threads 1 --frames 20
fi
