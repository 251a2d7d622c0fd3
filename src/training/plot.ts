/**
 * Loss curves as a standalone SVG (no chart library, browser-safe): axes with ticks, a legend, one
 * polyline per series, optional smoothing. Every piece of text is escaped: series names come from users.
 */

export interface LossPoint { step: number; loss: number }

export interface LossSeries {
  name: string;
  points: readonly LossPoint[];
  /** Draw dashed (e.g. eval curves beside train curves). */
  dashed?: boolean;
}

export interface LossPlotOptions {
  width?: number;
  height?: number;
  title?: string;
  xLabel?: string;
  yLabel?: string;
  /**
   * Exponential moving average weight in [0, 1), debiased like TensorBoard's: 0 draws the points
   * as they are; above 0 each series is drawn smoothed over a faint copy of its raw points.
   */
  smoothing?: number;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

/** Text safe inside XML elements and double- or single-quoted attributes. */
export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!)
    // Control characters other than tab, newline and return are not allowed in XML 1.0 at all.
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '\ufffd');
}

/** Debiased exponential moving average (TensorBoard's smoothing). */
export function smoothLosses(losses: readonly number[], weight: number): number[] {
  let last = 0;
  return losses.map((loss, i) => {
    last = last * weight + (1 - weight) * loss;
    return weight === 0 ? loss : last / (1 - weight ** (i + 1));
  });
}

/** About `count` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

const label = (value: number): string => {
  if (value !== 0 && (Math.abs(value) >= 1e6 || Math.abs(value) < 1e-3)) return value.toExponential(1);
  return String(Number(value.toPrecision(6)));
};

const range = (values: number[]): [number, number] => {
  if (values.length === 0) return [0, 1];
  // A loop, not Math.min(...values): long runs have more points than a call can take arguments.
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (lo === hi) { const pad = Math.abs(lo) * 0.1 || 1; lo -= pad; hi += pad; }
  return [lo, hi];
};

/** A standalone SVG document of the loss curves in `series`. Non-finite points are left out and counted in the legend. */
export function lossPlotSvg(series: readonly LossSeries[], options: LossPlotOptions = {}): string {
  const width = options.width ?? 720;
  const height = options.height ?? 420;
  const smoothing = options.smoothing ?? 0;
  if (!(smoothing >= 0 && smoothing < 1)) throw new RangeError(`smoothing must be in [0, 1), not ${smoothing}`);
  const margin = { left: 64, right: 16, top: options.title ? 36 : 16, bottom: 48 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;

  const clean = series.map((s) => {
    const points = s.points.filter((p) => Number.isFinite(p.step) && Number.isFinite(p.loss)).sort((a, b) => a.step - b.step);
    return { ...s, points, dropped: s.points.length - points.length };
  });
  const all = clean.flatMap((s) => s.points);
  const [x0, x1] = range(all.map((p) => p.step));
  let [y0, y1] = range(all.map((p) => p.loss));
  const pad = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - pad, y1 + pad];
  const sx = (step: number) => margin.left + ((step - x0) / (x1 - x0)) * plotW;
  const sy = (loss: number) => margin.top + (1 - (loss - y0) / (y1 - y0)) * plotH;
  const fmt = (v: number) => v.toFixed(2);

  const out: string[] = [];
  out.push('<?xml version="1.0" encoding="UTF-8"?>');
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  if (options.title) out.push(`<text class="title" x="${width / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(options.title)}</text>`);

  out.push('<g class="axes" stroke="#444" stroke-width="1">');
  out.push(`<line x1="${margin.left}" y1="${margin.top + plotH}" x2="${margin.left + plotW}" y2="${margin.top + plotH}"/>`);
  out.push(`<line x1="${margin.left}" y1="${margin.top}" x2="${margin.left}" y2="${margin.top + plotH}"/>`);
  out.push('</g>');
  out.push('<g class="ticks" fill="#444">');
  for (const t of niceTicks(x0, x1)) {
    const x = fmt(sx(t));
    out.push(`<line x1="${x}" y1="${margin.top + plotH}" x2="${x}" y2="${margin.top + plotH + 5}" stroke="#444"/>`);
    out.push(`<text class="xtick" x="${x}" y="${margin.top + plotH + 18}" text-anchor="middle">${escapeXml(label(t))}</text>`);
  }
  for (const t of niceTicks(y0, y1)) {
    const y = fmt(sy(t));
    out.push(`<line x1="${margin.left}" y1="${y}" x2="${margin.left + plotW}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text class="ytick" x="${margin.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${escapeXml(label(t))}</text>`);
  }
  out.push('</g>');
  out.push(`<text class="xlabel" x="${margin.left + plotW / 2}" y="${height - 10}" text-anchor="middle">${escapeXml(options.xLabel ?? 'step')}</text>`);
  out.push(`<text class="ylabel" transform="translate(16 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(options.yLabel ?? 'loss')}</text>`);

  out.push(`<g class="series" fill="none" stroke-width="1.5" stroke-linejoin="round">`);
  clean.forEach((s, i) => {
    if (s.points.length === 0) return;
    const color = PALETTE[i % PALETTE.length]!;
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    const line = (losses: number[], cls: string, extra: string) =>
      `<polyline class="${cls}" data-series="${i}" stroke="${color}"${dash}${extra} points="${s.points.map((p, k) => `${fmt(sx(p.step))},${fmt(sy(losses[k]!))}`).join(' ')}"/>`;
    const raw = s.points.map((p) => p.loss);
    if (smoothing > 0) out.push(line(raw, 'raw', ' stroke-opacity="0.25"'), line(smoothLosses(raw, smoothing), 'curve', ''));
    else out.push(line(raw, 'curve', ''));
  });
  out.push('</g>');

  if (clean.length > 0) {
    const rowH = 18;
    const legendX = margin.left + plotW - 220;
    out.push(`<g class="legend"><rect x="${legendX}" y="${margin.top + 6}" width="212" height="${clean.length * rowH + 8}" fill="#ffffff" fill-opacity="0.85" stroke="#ccc"/>`);
    clean.forEach((s, i) => {
      const y = margin.top + 10 + i * rowH + rowH / 2;
      const color = PALETTE[i % PALETTE.length]!;
      const note = s.points.length === 0 ? ' (no data)' : s.dropped > 0 ? ` (${s.dropped} non-finite left out)` : '';
      out.push(`<line x1="${legendX + 8}" y1="${y}" x2="${legendX + 32}" y2="${y}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
      out.push(`<text class="legend-label" x="${legendX + 38}" y="${y}" dominant-baseline="middle">${escapeXml(s.name + note)}</text>`);
    });
    out.push('</g>');
  }
  if (all.length === 0) out.push(`<text class="empty" x="${margin.left + plotW / 2}" y="${margin.top + plotH / 2}" text-anchor="middle" fill="#888">no data</text>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
