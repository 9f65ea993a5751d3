// The fidelity harness (issue 7): task instances × shared-context modes × methods, one record per
// run, and the cells of the accuracy heatmap (context length × needle depth, per method and task).
// `repokv bench fidelity` (engine/bench/fidelity.ts) and test/fidelity/* drive it.

import type { Tokenizer } from '../text/tokenizer.js';
import type { FidelityMethod, InstanceResult } from './methods.js';
import { kvTask, passkeyTask, type SharedContextMode, type TaskInstance, type TaskName } from './tasks.js';

export interface FidelityPlan {
  tasks: TaskName[];
  /** Prompt lengths (context + first question), tokens. */
  lengths: number[];
  /** Needle depths in [0, 1]: one passkey context each; kv questions are binned to the nearest. */
  depths: number[];
  /** SCBench modes the kv task runs in (passkey has one question: multi-request only). */
  modes: SharedContextMode[];
  /** Questions per kv context. */
  kvQuestions: number;
  seed: number;
}

export interface RunRecord extends Omit<InstanceResult, 'questions'> {
  /** Requested depth (passkey) or null (kv: per-question depths in `questions`). */
  depth: number | null;
  correct: number;
  total: number;
  accuracy: number;
  /** Smallest logit lead of a correct answer over the runner-up (null: unknown). */
  minMargin: number | null;
  /** Tokens computed by an equal number of cold runs (context + question each time), for comparison. */
  coldComputedTokens: number;
  questions: { depth: number; correct: boolean; ms: number; computedTokens: number; margin: number | null }[];
}

export interface HeatCell {
  method: string;
  task: TaskName;
  length: number;
  /** Depth bucket, percent. */
  depth: number;
  correct: number;
  total: number;
  accuracy: number;
}

/** Instances of the plan, generated once (every method answers the same ids). */
export function planInstances(tok: Tokenizer, plan: FidelityPlan): { inst: TaskInstance; depth: number | null; modes: SharedContextMode[] }[] {
  const out: { inst: TaskInstance; depth: number | null; modes: SharedContextMode[] }[] = [];
  for (const task of plan.tasks) {
    for (const length of plan.lengths) {
      if (task === 'passkey') {
        // One question: multi-turn is multi-request; 'single' when asked for.
        const modes: SharedContextMode[] = plan.modes.includes('single') ? ['multi-request', 'single'] : ['multi-request'];
        for (const depth of plan.depths) out.push({ inst: passkeyTask(tok, { length, depth, seed: plan.seed }), depth, modes });
      } else {
        out.push({ inst: kvTask(tok, { length, questions: plan.kvQuestions, seed: plan.seed }), depth: null, modes: plan.modes });
      }
    }
  }
  return out;
}

/** Nearest depth bucket (percent) of a depth in [0, 1]. */
function bucket(depth: number, depths: number[]): number {
  let best = depths[0];
  for (const d of depths) if (Math.abs(d - depth) < Math.abs(best - depth)) best = d;
  return Math.round(best * 100);
}

export async function runFidelity(
  tok: Tokenizer,
  plan: FidelityPlan,
  methods: FidelityMethod[],
  onRecord?: (r: RunRecord) => void,
): Promise<{ records: RunRecord[]; cells: HeatCell[] }> {
  const records: RunRecord[] = [];
  const cellMap = new Map<string, HeatCell>();
  const instances = planInstances(tok, plan);
  for (const method of methods) {
    for (const { inst, depth, modes } of instances) {
      for (const mode of modes) {
        const r = await method.run(inst, mode);
        const correct = r.questions.filter((q) => q.correct).length;
        const margins = r.questions.filter((q) => q.correct && q.margin !== null).map((q) => q.margin as number);
        const cold = r.questions.reduce((s, q) => s + q.promptTokens + q.expected.length - 1, 0);
        const { questions, ...rest } = r;
        const rec: RunRecord = {
          ...rest,
          depth,
          correct,
          total: questions.length,
          accuracy: questions.length ? correct / questions.length : 0,
          minMargin: margins.length ? Math.min(...margins) : null,
          coldComputedTokens: cold,
          questions: questions.map((q) => ({ depth: q.depth, correct: q.correct, ms: q.ms, computedTokens: q.computedTokens, margin: q.margin })),
        };
        records.push(rec);
        onRecord?.(rec);
        for (const q of questions) {
          const d = depth !== null ? Math.round(depth * 100) : bucket(q.depth, plan.depths);
          const key = `${method.name}|${inst.task}|${inst.length}|${d}`;
          let c = cellMap.get(key);
          if (!c) cellMap.set(key, (c = { method: method.name, task: inst.task, length: inst.length, depth: d, correct: 0, total: 0, accuracy: 0 }));
          c.total++;
          if (q.correct) c.correct++;
          c.accuracy = c.correct / c.total;
        }
      }
    }
  }
  return { records, cells: [...cellMap.values()] };
}
