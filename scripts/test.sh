#!/usr/bin/env bash
# The project's test command: installs the system packages the tests need (sudo when not
# root), builds everything and runs every test, the headless OBS ones under Xvfb.
#
#   scripts/test.sh                 all tests
#   scripts/test.sh --test engine   extra arguments go to `cargo test`
#
# Needs only Rust (cargo) beforehand. Tests that read ../shared/datasets skip where it is
# absent, unless AI_BG_REQUIRE_SHARED=1 (as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null 2>&1 || { echo "test: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
scripts/deps.sh

# Build first (the OBS tests load the freshly built cdylib), then test under a virtual display:
# libobs needs an X display to create its OpenGL context.
cargo build --locked --all-targets
xvfb-run -a -s "-screen 0 1280x720x24" cargo test --locked "$@"
