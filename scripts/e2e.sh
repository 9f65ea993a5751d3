#!/usr/bin/env bash
# The end-to-end test in a real VS Code (test/e2e/run.mjs): installs code-server 4.100.x,
# playwright-core and Debian's chromium (test/e2e/setup.sh, once), packages the extension
# (npm run package:extension), and drives it. Screenshots go to test/e2e/artifacts/.
# Usage: bash scripts/e2e.sh   (SKIP_PACKAGE=1 reuses dist/repokv-linux-x64.vsix)
set -euo pipefail
cd "$(dirname "$0")/.."
export ONNXRUNTIME_NODE_INSTALL=skip
start=$(date +%s)
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
bash test/e2e/setup.sh
if [ "${SKIP_PACKAGE:-}" != 1 ]; then npm run --silent package:extension; fi
node test/e2e/run.mjs dist/repokv-linux-x64.vsix
echo "scripts/e2e.sh: $(( $(date +%s) - start )) s in all"
