#!/usr/bin/env bash
# Vendor the web UI's browser assets (noVNC, xterm.js and its fit addon) from npm, at the versions
# pinned in ui/package-lock.json, into virtainer/api/ui/vendor/. The page loads nothing from
# outside the server. Idempotent: skipped when the vendored copy matches the lock file.
#   scripts/build-ui.sh         # run by setup-host.sh and build-images.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=virtainer/api/ui/vendor
want=$(sha256sum ui/package-lock.json | cut -c1-16)
[ "$(cat "$out/.lock-sha256" 2>/dev/null)" = "$want" ] && exit 0
command -v npm >/dev/null || { echo "build-ui.sh: npm is needed (apt-get install npm)" >&2; exit 2; }
npm ci --prefix ui --ignore-scripts --no-audit --no-fund --loglevel=error
modules=ui/node_modules
mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d "$out.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/novnc" "$tmp/xterm"
cp -r "$modules/@novnc/novnc/core" "$modules/@novnc/novnc/vendor" "$modules/@novnc/novnc/LICENSE.txt" "$tmp/novnc/"
cp "$modules/@xterm/xterm/lib/xterm.mjs" "$modules/@xterm/xterm/css/xterm.css" "$modules/@xterm/xterm/LICENSE" \
   "$modules/@xterm/addon-fit/lib/addon-fit.mjs" "$tmp/xterm/"
echo "$want" > "$tmp/.lock-sha256"
chmod -R a+rX "$tmp"
rm -rf "$out" && mv "$tmp" "$out"
trap - EXIT
echo "[build-ui] vendored noVNC and xterm.js into $out" >&2
