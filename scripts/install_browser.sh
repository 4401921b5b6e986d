#!/usr/bin/env bash
# Install what the browser tests need: Debian's Chromium and its matching chromedriver.
# Idempotent and quiet when both are already present; called by `make test` through a stamp file.
set -euo pipefail

have() {
    command -v "$1" > /dev/null 2>&1 || [ -x "/usr/bin/$1" ]
}

if have chromium && have chromedriver; then
    exit 0
fi

packages=(chromium chromium-driver)

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo > /dev/null 2>&1; then
    sudo=(sudo)
else
    echo "install_browser.sh: the browser tests need Debian's packages: ${packages[*]}" >&2
    echo "install_browser.sh: not root and no sudo; run as root:" >&2
    echo "    apt-get update && apt-get install -y --no-install-recommends ${packages[*]}" >&2
    exit 1
fi

if ! command -v apt-get > /dev/null 2>&1; then
    echo "install_browser.sh: apt-get not found; install ${packages[*]} (Chromium + chromedriver)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${sudo[@]}" apt-get update -qq \
    && "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"; } \
    > "$log" 2>&1; then
    cat "$log" >&2
    echo "install_browser.sh: failed to install ${packages[*]}" >&2
    exit 1
fi

if ! { have chromium && have chromedriver; }; then
    echo "install_browser.sh: installed ${packages[*]} but chromium/chromedriver still missing" >&2
    exit 1
fi
