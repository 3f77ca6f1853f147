#!/usr/bin/env bash
# Make sure Debian's headless browser for the web-UI test is present: /usr/bin/chromium and
# /usr/bin/chromedriver (packages chromium, chromium-driver). Installs them with apt-get when absent
# and we are root; otherwise says what is missing and exits 0 (tests/test_ui_browser.py then skips,
# or fails when $CI is set). Selenium is pointed at these files, so selenium-manager downloads nothing.
set -u
browser=/usr/bin/chromium; driver=/usr/bin/chromedriver
present() { [ -x "$browser" ] && [ -x "$driver" ]; }

if ! present; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: installing Debian's chromium and chromium-driver"
    log=$(apt-get update -qq 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends chromium chromium-driver 2>&1) || echo "$log" | tail -n 5
  else
    echo "ensure_chromium: chromium/chromium-driver are not installed and cannot be installed here (not root)"
    exit 0
  fi
fi
if present; then
  echo "ensure_chromium: $("$browser" --version 2>/dev/null | head -n 1) and" \
    "$("$driver" --version 2>/dev/null | cut -d' ' -f1-2) ready"
else
  echo "ensure_chromium: still missing $( [ -x "$browser" ] || echo "$browser " )$( [ -x "$driver" ] || echo "$driver" )"
fi
exit 0
