// `repokv make-model`: writes a synthetic GGUF model (seeded random weights, a synthetic tokenizer)
// that llama.cpp and RepoKV both load. Same options and seed -> same bytes.
import { statSync } from 'node:fs';
import { UserError } from '../errors.js';
import { parseArgs, flagNumber, flagString } from './args.js';
import {
  SIZE_PRESETS,
  WEIGHT_TYPES,
  presetShape,
  syntheticModel,
  writeSyntheticModel,
  type SizePreset,
  type SyntheticArch,
  type SyntheticShape,
  type SyntheticTokenizer,
  type WeightTypeName,
} from '../model/synthetic.js';
import { typeName } from '../gguf/types.js';
import { INDUCTION, planInductionModel, writeInductionModel } from '../model/induction.js';
import type { ParsedArgs } from './args.js';

const USAGE = `usage: repokv make-model --arch llama|qwen2|qwen3 --out FILE [options]
       repokv make-model --preset induction --out FILE [--seed N] [--ctx N] [--json]
  --preset induction           the constructed 2-layer qwen2 model of the fidelity harness: dense
                               attention provably copies a string from anywhere in the context
                               (engine/model/induction.ts); F32, the synthetic qwen2 tokenizer
  --locality B                 qwen2: q/k biases of B on every RoPE pair, so attention falls off with
                               distance like a trained model's (sparse-prefill benchmarks; e.g. 1.5)
  --size tiny|small|qwen0.5b|qwen1.5b   shape preset (default tiny); the options below override it:
    --layers N --embd N --heads N --kv-heads N --ff N --head-dim N --ctx N --vocab N (needs --tokenizer none)
  --type f32|f16|bf16|q8_0|q4_0|q4_k|q6_k   type of the 2-D weights (default f16; norms stay f32)
  --q4km                       llama.cpp's Q4_K_M mix (Q4_K, Q6_K for output and some attn_v/ffn_down)
  --tied | --untied            share token_embd with the output (default: untied for llama, tied for qwen2/qwen3)
  --seed N                     weights seed (default 1)
  --tokenizer bpe|spm|llama-bpe|qwen2|none   (default: llama-bpe for llama, qwen2 for qwen2/qwen3)
  --json                       print the summary as JSON`;

function choice<T extends string>(value: string | undefined, allowed: readonly T[], flag: string, dflt?: T): T {
  if (value === undefined) {
    if (dflt !== undefined) return dflt;
    throw new UserError(`option --${flag} is required (${allowed.join(', ')})`);
  }
  if (!(allowed as readonly string[]).includes(value)) throw new UserError(`option --${flag} must be one of ${allowed.join(', ')}, got "${value}"`);
  return value as T;
}

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['q4km', 'tied', 'untied', 'json', 'help']);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  if (p.flags.has('preset')) return runPreset(p);
  const known = new Set(['arch', 'size', 'type', 'q4km', 'tied', 'untied', 'seed', 'out', 'tokenizer', 'ctx', 'layers', 'embd', 'heads', 'kv-heads', 'ff', 'vocab', 'head-dim', 'locality', 'json', 'help']);
  for (const k of p.flags.keys()) if (!known.has(k)) throw new UserError(`unknown option --${k} (see repokv make-model --help)`);
  if (p.positional.length) throw new UserError(`unexpected argument "${p.positional[0]}" (see repokv make-model --help)`);

  const arch = choice<SyntheticArch>(flagString(p, 'arch'), ['llama', 'qwen2', 'qwen3'], 'arch');
  const size = choice<SizePreset>(flagString(p, 'size'), SIZE_PRESETS, 'size', 'tiny');
  const type = choice<WeightTypeName>(flagString(p, 'type'), Object.keys(WEIGHT_TYPES) as WeightTypeName[], 'type', 'f16');
  const out = flagString(p, 'out');
  if (!out) throw new UserError('option --out FILE is required');
  const tokFlag = choice(flagString(p, 'tokenizer'), ['bpe', 'spm', 'llama-bpe', 'qwen2', 'none'] as const, 'tokenizer', 'bpe');
  const tokenizer: SyntheticTokenizer = tokFlag === 'bpe' ? (arch === 'llama' ? 'llama-bpe' : 'qwen2') : tokFlag;
  if (p.flags.has('tied') && p.flags.has('untied')) throw new UserError('options --tied and --untied exclude each other');

  const preset = presetShape(arch, size);
  const shape: SyntheticShape = {
    ...preset,
    nLayers: flagNumber(p, 'layers', preset.nLayers),
    nEmbd: flagNumber(p, 'embd', preset.nEmbd),
    nHeads: flagNumber(p, 'heads', preset.nHeads),
    nKVHeads: flagNumber(p, 'kv-heads', preset.nKVHeads),
    nFF: flagNumber(p, 'ff', preset.nFF),
    contextLength: flagNumber(p, 'ctx', preset.contextLength),
    tied: p.flags.has('tied') ? true : p.flags.has('untied') ? false : preset.tied,
  };
  // A custom width or head count invalidates the preset's head size unless given again.
  if (p.flags.has('head-dim')) shape.headDim = flagNumber(p, 'head-dim', 0);
  else if (p.flags.has('embd') || p.flags.has('heads')) shape.headDim = arch === 'qwen3' && preset.headDim ? (2 * shape.nEmbd) / shape.nHeads : undefined;
  if (p.flags.has('vocab')) shape.nVocab = flagNumber(p, 'vocab', 0);
  const seed = flagNumber(p, 'seed', 1);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new UserError(`option --seed must be a whole number from 0 to 4294967295, got ${seed}`);

  const locality = p.flags.has('locality') ? flagNumber(p, 'locality', 0) : undefined;
  if (locality !== undefined && arch !== 'qwen2') throw new UserError('--locality needs --arch qwen2 (it sets the q/k biases)');
  const plan = syntheticModel({ arch, shape, type, q4km: p.flags.has('q4km'), seed, tokenizer, locality });
  const t0 = performance.now();
  try {
    writeSyntheticModel(out, plan);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR' || code === 'ENOTDIR') throw new UserError(`cannot write ${out} (${code}); check that its folder exists and is writable`);
    if (/disk is full/.test((e as Error).message)) throw new UserError((e as Error).message);
    throw e;
  }
  const bytes = statSync(out).size;
  const types = new Map<string, number>();
  for (const t of plan.tensors) types.set(typeName(t.type), (types.get(typeName(t.type)) ?? 0) + 1);
  const summary = {
    file: out,
    arch,
    size,
    type: p.flags.has('q4km') ? 'q4_k_m' : type,
    seed,
    tokenizer,
    params: plan.nParams,
    bytes,
    layers: shape.nLayers,
    embd: shape.nEmbd,
    heads: shape.nHeads,
    kvHeads: shape.nKVHeads,
    headDim: plan.headDim,
    ff: shape.nFF,
    vocab: plan.nVocab,
    ctx: shape.contextLength,
    tied: shape.tied,
    tensorTypes: Object.fromEntries(types),
    seconds: Number(((performance.now() - t0) / 1000).toFixed(2)),
  };
  if (p.flags.has('json')) console.log(JSON.stringify(summary));
  else {
    const typesText = [...types].map(([k, v]) => `${v} ${k}`).join(', ');
    console.log(`wrote ${out}: ${arch} ${size}, ${(plan.nParams / 1e6).toFixed(2)}M parameters, ${(bytes / 2 ** 20).toFixed(1)} MiB (${typesText}), vocab ${plan.nVocab} (${tokenizer}), seed ${seed}`);
  }
  return 0;
}

/** `--preset induction`: the constructed model of the fidelity harness (issue 7). */
function runPreset(p: ParsedArgs): number {
  for (const k of p.flags.keys()) if (!['preset', 'out', 'seed', 'ctx', 'json'].includes(k)) throw new UserError(`option --${k} does not apply to --preset induction (it takes --out, --seed, --ctx, --json)`);
  const preset = flagString(p, 'preset');
  if (preset !== 'induction') throw new UserError(`option --preset must be "induction", got "${preset}"`);
  const out = flagString(p, 'out');
  if (!out) throw new UserError('option --out FILE is required');
  const seed = flagNumber(p, 'seed', 1);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new UserError(`option --seed must be a whole number from 0 to 4294967295, got ${seed}`);
  const ctx = flagNumber(p, 'ctx', INDUCTION.contextLength);
  if (!Number.isInteger(ctx) || ctx < 64 || ctx > INDUCTION.contextLength) throw new UserError(`option --ctx must be a whole number from 64 to ${INDUCTION.contextLength}, got ${ctx}`);
  const t0 = performance.now();
  const plan = planInductionModel({ seed, contextLength: ctx });
  try {
    writeInductionModel(out, plan);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR' || code === 'ENOTDIR') throw new UserError(`cannot write ${out} (${code}); check that its folder exists and is writable`);
    if (/disk is full/.test((e as Error).message)) throw new UserError((e as Error).message);
    throw e;
  }
  const bytes = statSync(out).size;
  const m = plan.margins;
  const r = (x: number) => Number(x.toFixed(4));
  const summary = {
    file: out,
    preset: 'induction',
    arch: 'qwen2',
    seed,
    ctx,
    vocab: plan.nVocab,
    bytes,
    margins: { layer0: r(m.margin0), layer1: r(m.margin1), output: r(m.marginOut) },
    gap0: r(m.gap0),
    gap0At: m.gap0At,
    codeCoherence: r(m.codeCoherence),
    maxContentAngle: r(m.maxContentAngle),
    seconds: Number(((performance.now() - t0) / 1000).toFixed(2)),
  };
  if (p.flags.has('json')) console.log(JSON.stringify(summary));
  else {
    console.log(
      `wrote ${out}: induction model (qwen2, 2 layers, F32), ${(bytes / 2 ** 20).toFixed(1)} MiB, context ${ctx}, seed ${seed}; ` +
        `logit margins: previous-token heads ${m.margin0.toFixed(1)}, induction head ${m.margin1.toFixed(1)}, output ${m.marginOut.toFixed(1)}`,
    );
  }
  return 0;
}
