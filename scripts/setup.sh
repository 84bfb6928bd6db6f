#!/usr/bin/env bash
# Installs what building and testing Huddle needs, skipping whatever is already present.
# Safe to run again and again; prints each step it takes. Sourced by run.sh, test.sh, watch.sh.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARGO_LEPTOS_VERSION="0.3.10"
say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

need_e2e=${HUDDLE_SETUP_E2E:-1}

apt_install() {
  local sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "$@"
}

# 1. The WASM target for the hydrate build.
if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "wasm32-unknown-unknown target: present"
else
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# 1b. rustfmt and clippy for the lint step of the tests.
for component in rustfmt clippy; do
  if rustup component list --installed | grep -q "^${component}-"; then
    say "${component}: present"
  else
    say "adding ${component}"
    rustup component add "$component"
  fi
done

# 2. cargo-leptos, pinned: 0.3.11 needs a newer rustc; no_downloads makes it use tools on PATH.
if cargo leptos --version 2>/dev/null | grep -q " ${CARGO_LEPTOS_VERSION}\$"; then
  say "cargo-leptos ${CARGO_LEPTOS_VERSION}: present"
else
  say "installing cargo-leptos ${CARGO_LEPTOS_VERSION} (takes ~13 min on 2 cores)"
  cargo install "cargo-leptos@${CARGO_LEPTOS_VERSION}" --locked --features no_downloads
fi

# 3. wasm-bindgen-cli at exactly the wasm-bindgen version in Cargo.lock.
wbg_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$repo_root/Cargo.lock")
if [ -z "$wbg_version" ]; then
  echo "setup: cannot find the wasm-bindgen version in Cargo.lock" >&2
  exit 1
fi
if wasm-bindgen --version 2>/dev/null | grep -q " ${wbg_version}\$"; then
  say "wasm-bindgen-cli ${wbg_version}: present"
else
  say "installing wasm-bindgen-cli ${wbg_version} (~2 min)"
  # Not --locked: its lockfile pins a crate version this registry does not serve.
  cargo install wasm-bindgen-cli --version "${wbg_version}" --force
fi

# 4. npm packages: Playwright's test runner and binaryen (wasm-opt for release builds).
lock="$repo_root/end2end/package-lock.json"
stamp="$repo_root/end2end/node_modules/.huddle-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt "$lock" ]; then
  say "end2end npm packages: present"
else
  say "installing end2end npm packages"
  (cd "$repo_root/end2end" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  touch "$stamp"
fi
export PATH="$repo_root/end2end/node_modules/.bin:$PATH"

# 5. Debian's Chromium for the browser tests (never a browser downloaded by Playwright).
if [ "$need_e2e" = 1 ]; then
  if [ -x /usr/bin/chromium ]; then
    say "chromium: present"
  else
    say "installing Debian chromium"
    apt_install chromium
  fi
fi

# 6. PostgreSQL and Redis for the scale-out tests (the tests start their own servers on
# loopback; nothing runs as a service).
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null; then
  say "postgresql and redis-server: present"
else
  say "installing Debian postgresql and redis-server"
  apt_install postgresql redis-server
fi
