#!/usr/bin/env bash
# Every WebGPU check and benchmark for a machine with a real GPU (e.g. an NVIDIA H200), in one run of
# about 8 minutes at most, results as JSON in $OUT (default $TMPDIR/gpu-check-out). Installs nothing beyond
# `npm ci` (and only when node_modules is missing).
#
# Usage: OUT=dir scripts/gpu-check.sh [--tiny]
#   --tiny   proves the script on a machine without a GPU (lavapipe): a tiny model, a software adapter
#            allowed, a short benchmark. Without it a software adapter is reported, not benchmarked.
#
# Steps, each under its own time limit within the budget (GPU_CHECK_BUDGET seconds, default 470):
#   1. npm ci                       when node_modules is missing                       -> npm.txt
#   2. facts                        node, nvidia-smi, Vulkan ICDs                      -> facts.txt
#   3. node bin/repokv.js doctor --json                                                -> doctor.json
#   4. scripts/gpu-bench.ts         Engine prefill + greedy decode on a synthetic model shaped like
#                                   Qwen2.5-1.5B (28 layers, 1536 wide, 12 heads, 2 KV heads, 8960 FFN,
#                                   tied, vocab 151936) in Q4_K_M: decode tokens/s and its fraction of the
#                                   4.8 TB/s bound (weight bytes x tokens/s / 4.8e12)  -> bench.json
#   5. engine/backends/webgpu/sparse-bench.ts  sparse prefill (issue 8): dense vs sparse attention of
#                                   the last 8K-row chunk at 16K, 32K, 64K, 128K keys (Qwen2.5-1.5B's
#                                   attention shape, paged f16 KV, the engine's default vertical-slash
#                                   budget), estimation share, density, recall; random and planted
#                                   inputs                                             -> sparse.json
#   6. node scripts/test.mjs webgpu  the WebGPU test suite                             -> tests.txt
# Summary of all of it: $OUT/gpu-check.json (also printed last on stdout).
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
tiny=0
for a in "$@"; do
  case "$a" in
    --tiny) tiny=1 ;;
    *) echo "usage: OUT=dir scripts/gpu-check.sh [--tiny]" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-${TMPDIR:-/tmp}/gpu-check-out}"
mkdir -p "$OUT"
budget="${GPU_CHECK_BUDGET:-470}"
start=$(date +%s)
steps="$OUT/steps.tsv"
: > "$steps"

left() { echo $(( budget - ($(date +%s) - start) )); }
# run NAME CAP_SECONDS OUTFILE CMD...: runs CMD with stdout to OUTFILE (stderr to OUTFILE.err) under
# min(CAP, time left - 5 s); records name, status (ok | failed:RC | timeout | skipped) and seconds.
run() {
  local name="$1" cap="$2" out="$3"
  shift 3
  local t=$(( $(left) - 5 ))
  [ "$t" -gt "$cap" ] && t="$cap"
  if [ "$t" -lt 10 ]; then
    printf '%s\tskipped\t0\n' "$name" >> "$steps"
    echo "gpu-check: $name skipped (budget spent)" >&2
    return 1
  fi
  echo "gpu-check: $name (up to ${t}s)…" >&2
  local s0 rc st
  s0=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$t" "$@" > "$out" 2> "$out.err"
  rc=$?
  if [ $rc -eq 0 ]; then st=ok; elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then st=timeout; else st="failed:$rc"; fi
  printf '%s\t%s\t%s\n' "$name" "$st" $(( $(date +%s) - s0 )) >> "$steps"
  echo "gpu-check: $name $st" >&2
  [ $rc -eq 0 ]
}

# 1. dependencies
if [ ! -d node_modules/webgpu ] || [ ! -d node_modules/tsx ]; then
  ONNXRUNTIME_NODE_INSTALL=skip run npm-ci 240 "$OUT/npm.txt" npm ci --no-audit --no-fund
fi

# 2. facts
{
  echo "node $(node --version 2>&1)"
  uname -a
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv 2>&1
  else
    echo "nvidia-smi: not present"
  fi
  echo "Vulkan ICDs:"
  ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null
} > "$OUT/facts.txt" 2>&1

# 3. doctor
run doctor 90 "$OUT/doctor.json" node bin/repokv.js doctor --json
software=$(node -e 'try { const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(d.webgpu && d.webgpu.ok ? String(!!(d.webgpu.adapter && d.webgpu.adapter.software)) : "none"); } catch { console.log("none"); }' "$OUT/doctor.json")

# 4. benchmark
if [ "$tiny" = 1 ]; then
  run bench 240 "$OUT/bench.json" node --import tsx scripts/gpu-bench.ts --size tiny --prompt 32 --decode 8 --repeat 1 --allow-software --dir "$OUT/models"
elif [ "$software" = false ]; then
  run bench 300 "$OUT/bench.json" node --import tsx scripts/gpu-bench.ts --size qwen1.5b --prompt 512 --decode 128 --repeat 2 --dir "${GPU_CHECK_MODEL_DIR:-${TMPDIR:-/tmp}/repokv-bench}"
else
  printf 'bench\tskipped\t0\n' >> "$steps"
  echo "gpu-check: bench skipped (no hardware WebGPU adapter: $software)" >&2
fi

# 5. sparse prefill kernels
if [ "$tiny" = 1 ]; then
  run sparse 120 "$OUT/sparse.json" node --import tsx engine/backends/webgpu/sparse-bench.ts --tiny
elif [ "$software" = false ]; then
  run sparse 150 "$OUT/sparse.json" node --import tsx engine/backends/webgpu/sparse-bench.ts --lengths "${GPU_CHECK_SPARSE_LENGTHS:-16384,32768,65536,131072}" --repeat 2
else
  printf 'sparse\tskipped\t0\n' >> "$steps"
  echo "gpu-check: sparse skipped (no hardware WebGPU adapter: $software)" >&2
fi

# 6. tests
run tests 240 "$OUT/tests.txt" node scripts/test.mjs webgpu

# Summary.
node - "$OUT" "$tiny" "$(( $(date +%s) - start ))" > "$OUT/gpu-check.json" <<'EOF'
const fs = require('fs');
const [out, tiny, seconds] = process.argv.slice(2);
const read = (f) => { try { return fs.readFileSync(`${out}/${f}`, 'utf8'); } catch { return null; } };
const json = (f) => { const t = (read(f) || '').trim(); for (const s of [t, t.split('\n').pop()]) { try { return JSON.parse(s); } catch {} } return null; };
const steps = Object.fromEntries((read('steps.tsv') || '').trim().split('\n').filter(Boolean).map((l) => { const [n, s, t] = l.split('\t'); return [n, { status: s, seconds: +t }]; }));
const doctor = json('doctor.json');
const tests = read('tests.txt') || '';
const count = (k) => { const m = new RegExp(`^# ${k} (\\d+)`, 'm').exec(tests); return m ? +m[1] : null; };
const failed = [...tests.matchAll(/^not ok \d+ - (.*)$/gm)].map((m) => m[1]);
const bench = json('bench.json');
const sparse = json('sparse.json');
const w = doctor && doctor.webgpu;
console.log(JSON.stringify({
  check: 'gpu-check', tiny: tiny === '1', seconds: +seconds, steps,
  facts: (read('facts.txt') || '').trim().split('\n'),
  webgpu: w ? { ok: w.ok, error: w.error, adapter: w.adapter, using: w.using, kernelCheck: w.kernelCheck, autoPicks: w.autoPicks, limits: w.limits } : null,
  // Totals come from the runner's last lines; a run cut short by its time limit has only the ok lines.
  tests: { tests: count('tests'), pass: count('pass'), fail: count('fail'), failed, okLines: (tests.match(/^ok \d+/gm) || []).length },
  bench,
  sparse,
}, null, 1));
EOF
cat "$OUT/gpu-check.json"
