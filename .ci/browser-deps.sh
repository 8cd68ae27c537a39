#!/usr/bin/env bash
# Install what tests/test_report_browser.py needs on a fresh Debian machine (run as root):
# Debian's chromium (the test drives /usr/bin/chromium; no Playwright browser download) and
# the playwright Python package in the active Python environment. Idempotent and quiet:
# prints one line per step, the full log only on failure.
#   PYTHON=/path/to/python .ci/browser-deps.sh
set -euo pipefail

PYTHON="${PYTHON:-python3}"
LOG="$(mktemp -t browser-deps.XXXXXX.log)"
trap 'status=$?; if [ $status -ne 0 ]; then echo "browser-deps: failed (exit $status); log:" >&2; cat "$LOG" >&2; fi; rm -f "$LOG"' EXIT

if [ -x /usr/bin/chromium ]; then
    echo "browser-deps: chromium present ($(/usr/bin/chromium --version 2>/dev/null | head -n1))"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "browser-deps: installing chromium needs root (apt-get); rerun as root" >&2
        exit 1
    fi
    start=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >>"$LOG" 2>&1
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >>"$LOG" 2>&1
    echo "browser-deps: installed chromium in $(( $(date +%s) - start )) s"
fi

if "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
    echo "browser-deps: playwright Python package present"
else
    # Only the Python driver: the browser is Debian's chromium, never `playwright install`.
    "$PYTHON" -m pip install -q "playwright>=1.40" >>"$LOG" 2>&1
    echo "browser-deps: installed the playwright Python package"
fi
