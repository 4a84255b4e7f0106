#!/usr/bin/env bash
# Vendors the browser build of analytics.js (the npm package @segment/analytics-next)
# that Tessera serves at /analytics.js/v1/{writeKey}/analytics.min.js and
# /analytics-next/bundles/{file}.
#
# Usage: tests/vendor-analytics.sh VERSION      e.g. tests/vendor-analytics.sh 1.84.3
#
# It downloads the package with `npm pack` (the ordinary npm client), copies its
# standalone build (dist/umd/standalone.js: what the Segment CDN serves as
# analytics.min.js) and the lazy chunks it loads (dist/umd/*.bundle.*.js), each with
# the package's .gz twin, and its licence into
# crates/tessera-server/assets/analytics-next/VERSION/, removes any other vendored
# version, and writes crates/tessera-server/assets/analytics-next/files.rs, the table
# web_sdk.rs compiles into the binary. Rebuild Tessera afterwards and run
# tests/e2e/test_browser.py (it loads the bundle in Chromium).
set -euo pipefail

VERSION="${1:?usage: $0 VERSION (of @segment/analytics-next)}"
if ! [[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "$0: $VERSION is not a version such as 1.84.3" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ASSETS="$ROOT/crates/tessera-server/assets/analytics-next"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

(cd "$WORK" && npm pack --silent "@segment/analytics-next@$VERSION" >/dev/null)
tar -xzf "$WORK"/segment-analytics-next-"$VERSION".tgz -C "$WORK"
UMD="$WORK/package/dist/umd"
[ -f "$UMD/standalone.js" ] || { echo "$0: the package has no dist/umd/standalone.js" >&2; exit 1; }

rm -rf "$ASSETS"
mkdir -p "$ASSETS/$VERSION"
cp "$WORK/package/LICENSE.MD" "$ASSETS/$VERSION/LICENSE.MD"
cp "$UMD/standalone.js" "$UMD/standalone.js.gz" "$ASSETS/$VERSION/"
chunks=()
for chunk in "$UMD"/*.bundle.*.js; do
  name="$(basename "$chunk")"
  cp "$chunk" "$chunk.gz" "$ASSETS/$VERSION/"
  chunks+=("$name")
done

{
  echo "// Written by tests/vendor-analytics.sh $VERSION: do not edit."
  echo "/// The vendored version of @segment/analytics-next."
  echo "pub const VERSION: &str = \"$VERSION\";"
  echo "/// The standalone build (analytics.min.js) and its gzip twin."
  echo "pub const STANDALONE: (&[u8], &[u8]) = ("
  echo "    include_bytes!(\"$VERSION/standalone.js\"),"
  echo "    include_bytes!(\"$VERSION/standalone.js.gz\"),"
  echo ");"
  echo "/// The lazy chunks: file name, the file, its gzip twin."
  echo "pub const CHUNKS: &[(&str, &[u8], &[u8])] = &["
  for name in "${chunks[@]}"; do
    echo "    ("
    echo "        \"$name\","
    echo "        include_bytes!(\"$VERSION/$name\"),"
    echo "        include_bytes!(\"$VERSION/$name.gz\"),"
    echo "    ),"
  done
  echo "];"
} > "$ASSETS/files.rs"
echo "vendored @segment/analytics-next $VERSION: standalone.js and ${#chunks[@]} chunks in $ASSETS/$VERSION"
