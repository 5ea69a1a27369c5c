# Sourced by scripts/windows-test.sh and scripts/package-test.sh (from the repository root):
# a Wine prefix of our own (target/wine unless WINEPREFIX is set), quiet, without the
# Mono/Gecko install prompts, created on first use, with the ProcessPrng shim in its
# system32. Cargo runs Windows test executables through Wine.
export WINEPREFIX="${WINEPREFIX:-$PWD/target/wine}" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  echo "wine: creating the prefix $WINEPREFIX"
  mkdir -p "$(dirname "$WINEPREFIX")"
  wineboot -i >/dev/null 2>&1 || true
  wineserver -w
fi
# Rust's std (>= 1.78) imports ProcessPrng from bcryptprimitives.dll, which Wine 8.0 lacks
# (Windows 10+ has it): a shim forwarding to RtlGenRandom, in this prefix only.
wine_sys32="$WINEPREFIX/drive_c/windows/system32"
if [ ! -f "$wine_sys32/bcryptprimitives.dll" ] || [ tests/windows/processprng.c -nt "$wine_sys32/bcryptprimitives.dll" ]; then
  x86_64-w64-mingw32-gcc -O2 -shared -o "$wine_sys32/bcryptprimitives.dll" tests/windows/processprng.c -ladvapi32
fi
