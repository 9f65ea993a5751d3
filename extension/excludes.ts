// VS Code's `files.exclude` as ignore patterns for the engine's walk (gitignore syntax). The glob
// dialects are close: `**/x`, `*.ext` and `dir/` mean the same in both; VS Code's `{a,b}` groups are
// expanded here, and entries set to false (or to a `when` clause object, which needs a sibling file
// check the walk does not do) are not applied.

/** Expands `{a,b}` groups (nested ones too) into plain alternatives. */
export function expandBraces(glob: string): string[] {
  const open = glob.indexOf('{');
  if (open < 0) return [glob];
  let depth = 0;
  for (let i = open; i < glob.length; i++) {
    if (glob[i] === '{') depth++;
    else if (glob[i] === '}' && --depth === 0) {
      const parts: string[] = [];
      let start = open + 1;
      let d = 0;
      for (let j = open + 1; j < i; j++) {
        if (glob[j] === '{') d++;
        else if (glob[j] === '}') d--;
        else if (glob[j] === ',' && d === 0) {
          parts.push(glob.slice(start, j));
          start = j + 1;
        }
      }
      parts.push(glob.slice(start, i));
      const head = glob.slice(0, open);
      const tail = glob.slice(i + 1);
      return parts.flatMap((p) => expandBraces(head + p + tail));
    }
  }
  return [glob]; // unbalanced: leave it as written
}

export function filesExcludeToIgnore(filesExclude: Record<string, unknown> | undefined): string[] {
  if (!filesExclude) return [];
  const out: string[] = [];
  for (const [glob, on] of Object.entries(filesExclude)) {
    if (on !== true) continue;
    for (const g of expandBraces(glob.trim())) if (g) out.push(g);
  }
  return out;
}
