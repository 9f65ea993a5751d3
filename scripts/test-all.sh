#!/usr/bin/env bash
# The one command that runs every test on a fresh machine (README "Tests"); .ci/run calls exactly this.
# It installs what the tests need: Mesa's software Vulkan driver (lavapipe) for the WebGPU tests, and
# the npm dependencies (onnxruntime-node's CUDA download skipped: it cannot work offline and the CPU
# provider ships inside the package).
set -euo pipefail
cd "$(dirname "$0")/.."
export ONNXRUNTIME_NODE_INSTALL=skip
npm ci --no-audit --no-fund --loglevel=error
bash scripts/setup-vulkan.sh
npx tsc -p tsconfig.json --noEmit
node scripts/test.mjs
