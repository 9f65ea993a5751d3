#!/usr/bin/env bash
# The one command that runs every test on a fresh machine (README "Tests"); .ci/run calls exactly this.
# It installs what the tests need: Mesa's software Vulkan driver (lavapipe) for the WebGPU tests,
# code-server, Chromium and playwright-core for the end-to-end test (test/e2e/setup.sh), and
# the npm dependencies (onnxruntime-node's CUDA download skipped: it cannot work offline and the CPU
# provider ships inside the package).
set -euo pipefail
cd "$(dirname "$0")/.."
export ONNXRUNTIME_NODE_INSTALL=skip
npm ci --no-audit --no-fund --loglevel=error
bash scripts/setup-vulkan.sh
npx tsc -p tsconfig.json --noEmit
node scripts/test.mjs
# End to end in a real VS Code (code-server + Chromium): installs them on first use, packages the
# .vsix, drives the chat panel. About 2 minutes once installed, 4–6 on a fresh machine.
bash scripts/e2e.sh
