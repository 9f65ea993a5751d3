// An outline of a file: its declaration lines with their line numbers, for files that do not fit the
// context budget whole. Language-agnostic on purpose (a line-based match of the declaration keywords
// of the common languages, at shallow indentation): no parser per language, and the same bytes for
// the same text everywhere.

const DECL = new RegExp(
  '^\\s{0,8}(' +
    [
      // JavaScript / TypeScript
      '(export\\s+)?(default\\s+)?(declare\\s+)?(abstract\\s+)?(async\\s+)?(function\\*?|class|interface|type|enum|namespace|module)\\s+[A-Za-z_$]',
      'export\\s+(const|let|var|\\{|\\*|default)',
      '(const|let|var)\\s+[A-Za-z_$][\\w$]*\\s*=\\s*(async\\s+)?(\\(|function|class)',
      // class members (TypeScript/Java/C#/Kotlin style)
      '(public|private|protected|static|override|readonly|abstract|async|get|set)\\s+[\\w$<>\\[\\],\\s]*\\(',
      // Python
      '(async\\s+)?def\\s+\\w+|class\\s+\\w+',
      // Go
      'func\\s+(\\([^)]*\\)\\s*)?\\w+|type\\s+\\w+\\s+(struct|interface)',
      // Rust
      '(pub(\\([^)]*\\))?\\s+)?(async\\s+)?(unsafe\\s+)?(fn|struct|enum|trait|impl|mod|macro_rules!)\\b',
      // C / C++ / Java / C# (a type and a name followed by a parenthesis at the start of a line)
      '(template\\s*<.*>\\s*)?(static\\s+|inline\\s+|extern\\s+|virtual\\s+)*[A-Za-z_][\\w:<>,*&\\s]*\\s+[*&]?[A-Za-z_][\\w:]*\\s*\\([^;]*$',
      '(struct|union|typedef|#define)\\s+\\w+',
      // Ruby, PHP, shell, SQL
      '(def|module)\\s+[\\w.?!]+|(public\\s+|private\\s+)?function\\s+\\w+|\\w+\\s*\\(\\)\\s*\\{|create\\s+(table|view|function|index)\\b',
    ].join('|') +
    ')',
  'i',
);

/** Lines kept at most, so an outline stays small even for a huge generated file. */
export const OUTLINE_MAX_LINES = 400;

const HEADING = /^#{1,4}\s+\S/;

/**
 * The declaration lines of a text (headings for Markdown), as `N: line` (1-based), and the number of
 * lines of the text.
 */
export function outline(text: string, path = ''): { lines: string[]; total: number } {
  const re = /\.(md|markdown|mdx|rst|adoc)$/i.test(path) ? HEADING : DECL;
  const all = text.split('\n');
  if (all.length && all[all.length - 1] === '') all.pop();
  const lines: string[] = [];
  for (let i = 0; i < all.length && lines.length < OUTLINE_MAX_LINES; i++) {
    const l = all[i];
    if (l.length > 300) continue; // minified or data, not a declaration
    if (re.test(l)) lines.push(`${i + 1}: ${l.replace(/\s+$/, '')}`);
  }
  return { lines, total: all.length };
}
