#!/usr/bin/env bash
# Render an HTML page (e.g. `spacy-el link --html`) in headless Chromium and save a screenshot:
#   scripts/screenshot_html.sh links.html links.png [WIDTHxHEIGHT]
# Needs Debian's chromium (`apt-get install -y chromium`); no network is used.
set -euo pipefail
page=$(realpath "$1"); out=$(realpath -m "$2"); size=${3:-1400,1000}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome) || {
  echo "no Chromium: apt-get install -y chromium" >&2; exit 2; }
profile=$(mktemp -d); trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$profile" --hide-scrollbars --screenshot="$out" \
  --window-size="$size" "file://$page" >/dev/null 2>&1
test -s "$out"
