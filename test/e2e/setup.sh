#!/usr/bin/env bash
# Installs what the end-to-end test needs, outside the project's own dependencies:
#   - Debian packages: chromium (driven by playwright-core), ripgrep (code-server's search binary,
#     which its installer would otherwise download), and the headers code-server's native modules build
#     against (libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev pkg-config);
#   - code-server 4.100.x (a real VS Code; the last line that runs on Node 20) and playwright-core into
#     test/e2e/.code-server (its native build is heavy, so it is not a project dependency).
# Idempotent: a second run finds everything in place and returns at once.
set -euo pipefail
cd "$(dirname "$0")"
HERE="$(pwd)"
CS_VERSION=4.100.3
PW_VERSION=1.65.1
DEST="$HERE/.code-server"

need_apt=()
for p in chromium ripgrep libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev pkg-config build-essential python3; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "e2e setup: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ -x "$DEST/node_modules/.bin/code-server" ] && [ -f "$DEST/node_modules/code-server/lib/vscode/node_modules/.package-lock.json" ] \
   && [ -d "$DEST/node_modules/playwright-core" ] && [ -f "$DEST/.installed-$CS_VERSION" ]; then
  echo "e2e setup: code-server $CS_VERSION already installed in $DEST"
  exit 0
fi

mkdir -p "$DEST"
# @vscode/ripgrep downloads a prebuilt rg from GitHub, which cannot work here; it uses an archive
# cached in the OS temp dir when one is there, so give it Debian's rg in that archive's shape.
export TMPDIR="$DEST/tmp"
mkdir -p "$TMPDIR/rg"
cp "$(command -v rg)" "$TMPDIR/rg/rg"
for v in 1.15.5 1.15.6 1.15.9 1.15.10 1.15.11 1.15.13 1.15.14; do
  mkdir -p "$TMPDIR/vscode-ripgrep-cache-$v"
  for r in 4 8 10 13; do
    tar czf "$TMPDIR/vscode-ripgrep-cache-$v/ripgrep-v13.0.0-$r-x86_64-unknown-linux-musl.tar.gz" -C "$TMPDIR/rg" rg
  done
done

cd "$DEST"
[ -f package.json ] || echo '{"name":"repokv-e2e-tools","private":true}' > package.json
export npm_config_unsafe_perm=true npm_config_yes=true npm_config_fund=false npm_config_audit=false
# node-gyp builds against the installed Node's headers (Debian's nodejs ships them under /usr).
if [ -f /usr/include/node/node.h ]; then export npm_config_nodedir=/usr; fi
echo "e2e setup: npm install code-server@$CS_VERSION playwright-core@$PW_VERSION (native build, several minutes)"
npm install --no-save --loglevel=error "code-server@$CS_VERSION" "playwright-core@$PW_VERSION"
touch "$DEST/.installed-$CS_VERSION"
echo "e2e setup: done"
