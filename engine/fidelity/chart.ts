// The fidelity heatmap: accuracy by context length × needle depth, one panel per method and task,
// as a Vega-Lite spec rendered headless by Vega (SVG) and resvg (PNG).

import { writeFileSync } from 'node:fs';
import type { HeatCell } from './harness.js';

/** The Vega-Lite spec of the heatmap (also written next to the picture, for re-rendering elsewhere). */
export function heatmapSpec(cells: HeatCell[], title = 'Fidelity: accuracy by context length and needle depth'): Record<string, unknown> {
  const values = cells.map((c) => ({ ...c, lengthLabel: c.length >= 1024 ? `${Math.round(c.length / 1024)}K` : String(c.length), percent: Math.round(c.accuracy * 100) }));
  const lengths = [...new Set(cells.map((c) => c.length))].sort((a, b) => a - b).map((l) => (l >= 1024 ? `${Math.round(l / 1024)}K` : String(l)));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    data: { values },
    facet: { row: { field: 'method', type: 'nominal', title: 'method' }, column: { field: 'task', type: 'nominal', title: 'task' } },
    spec: {
      width: { step: 44 },
      height: { step: 26 },
      layer: [
        {
          mark: 'rect',
          encoding: {
            x: { field: 'lengthLabel', type: 'ordinal', sort: lengths, title: 'context length (tokens)', axis: { labelAngle: 0 } },
            y: { field: 'depth', type: 'ordinal', sort: 'ascending', title: 'needle depth (%)' },
            color: { field: 'accuracy', type: 'quantitative', scale: { domain: [0, 1], scheme: 'redyellowgreen' }, title: 'accuracy' },
            tooltip: [{ field: 'correct' }, { field: 'total' }],
          },
        },
        {
          mark: { type: 'text', fontSize: 10 },
          encoding: {
            x: { field: 'lengthLabel', type: 'ordinal', sort: lengths },
            y: { field: 'depth', type: 'ordinal', sort: 'ascending' },
            text: { field: 'percent', type: 'quantitative' },
          },
        },
      ],
    },
    config: { font: 'DejaVu Sans', view: { stroke: null } },
  };
}

export async function renderHeatmapSVG(cells: HeatCell[], title?: string): Promise<string> {
  const vega = await import('vega');
  const { compile } = await import('vega-lite');
  // The typed Vega-Lite spec is a large union; the plain object above is checked by compile itself.
  const vg = compile(heatmapSpec(cells, title) as unknown as Parameters<typeof compile>[0]).spec;
  const view = new vega.View(vega.parse(vg), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Writes the heatmap to `path`: SVG, or PNG when the path ends in .png (resvg, system fonts). */
export async function writeHeatmap(path: string, cells: HeatCell[], title?: string): Promise<void> {
  const svg = await renderHeatmapSVG(cells, title);
  if (path.toLowerCase().endsWith('.png')) {
    const { Resvg } = await import('@resvg/resvg-js');
    const png = new Resvg(svg, { background: 'white', fitTo: { mode: 'zoom', value: 2 }, font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' } }).render().asPng();
    writeFileSync(path, png);
  } else writeFileSync(path, svg);
}
