#!/usr/bin/env bash
# The live dashboard in headless Chromium (driven by chromedriver over WebDriver) against a
# gateway with a simulated fleet: live numbers change without a reload, charts are drawn,
# junk shows up as refusals, a hostile device id stays text, the CSP blocks nothing.
# Needs Debian's chromium and chromium-driver (.ci/run installs them). With IOTSEAL_TEST_NATS
# set, a second test checks the cluster nodes table of a two-node cluster.
#
#   scripts/dashboard-browser-test.sh                  # screenshot to target/dashboard.png
#   scripts/dashboard-browser-test.sh --update-docs    # 60 s of history, to docs/dashboard.png
set -euo pipefail
cd "$(dirname "$0")/.."

export CHROMIUM="${CHROMIUM:-$(command -v chromium || true)}"
export CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver || true)}"
if [ -z "$CHROMIUM" ] || [ -z "$CHROMEDRIVER" ]; then
  echo "error: chromium and chromedriver are needed (apt-get install chromium chromium-driver)" >&2
  exit 1
fi
target="${CARGO_TARGET_DIR:-$(pwd)/target}"
export DASHBOARD_SCREENSHOT="${DASHBOARD_SCREENSHOT:-$target/dashboard.png}"
if [ "${1:-}" = "--update-docs" ]; then
  export DASHBOARD_SCREENSHOT="$(pwd)/docs/dashboard.png"
  export DASHBOARD_LINGER_SECS="${DASHBOARD_LINGER_SECS:-60}"
fi
"$CHROMIUM" --version
start=$(date +%s)
cargo test -p iotseal-e2e --test dashboard_browser -- --ignored --nocapture
echo "dashboard browser test: $(( $(date +%s) - start )) s (build included); screenshot $DASHBOARD_SCREENSHOT"
