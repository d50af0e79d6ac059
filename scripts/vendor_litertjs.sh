#!/usr/bin/env bash
# Fetch LiteRT.js (npm: @litertjs/core and @litertjs/wasm-utils, Apache-2.0) at the pinned version
# into mobilenet_tf/webpage/litert/, the runtime `mobilenet-export --web` copies beside the model.
# The tarballs are checked against the registry's sha512 integrity pinned here; only the files the
# page loads are kept (the ES modules and the two single-threaded WebAssembly builds: relaxed SIMD,
# and "compat" for browsers without it). Needs npm (the registry, not a CDN).
set -euo pipefail
VERSION=2.5.3
CORE_SHA512="PlGmbMOq9WitX7FO0jhbdJw9GthatsyuCQXjTt/wJZo0FLaw48q4tz8IwqgqCIkviYGr9OFDL1kCnN4nzWoyJQ=="
UTILS_SHA512="4fJiw6tBQnIs+0jH/OQ16nYOiSl8/+zZnn5h2ul8aTKHi05sVqZW580Tmk78pC2kT39A9OYBVdFawteZ/sI1kQ=="
cd "$(dirname "$0")/.."
dest=mobilenet_tf/webpage/litert
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@litertjs/core@$VERSION" "@litertjs/wasm-utils@$VERSION" >/dev/null)
check() { [ "$(openssl dgst -sha512 -binary "$1" | base64 -w0)" = "$2" ] || { echo "$1: sha512 mismatch" >&2; exit 1; }; }
check "$work/litertjs-core-$VERSION.tgz" "$CORE_SHA512"
check "$work/litertjs-wasm-utils-$VERSION.tgz" "$UTILS_SHA512"
mkdir -p "$work/core" "$work/utils"
tar xzf "$work/litertjs-core-$VERSION.tgz" -C "$work/core"
tar xzf "$work/litertjs-wasm-utils-$VERSION.tgz" -C "$work/utils"
rm -rf "$dest" && mkdir -p "$dest/core/wasm" "$dest/wasm-utils"
cp "$work/core/package/dist/index.js" "$dest/core/"
for build in litert_wasm_internal litert_wasm_compat_internal; do
  cp "$work/core/package/wasm/$build.js" "$work/core/package/wasm/$build.wasm" "$dest/core/wasm/"
done
cp "$work/utils/package/dist/index.js" "$dest/wasm-utils/"
git show HEAD:"$dest/LICENSE" > "$dest/LICENSE" 2>/dev/null || echo "restore $dest/LICENSE (Apache-2.0) by hand" >&2
echo "$VERSION" > "$dest/VERSION"
