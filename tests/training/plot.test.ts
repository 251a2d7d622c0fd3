import { test } from 'node:test';
import assert from 'node:assert/strict';
import { escapeXml, lossPlotSvg, niceTicks, smoothLosses, type LossSeries } from '../../src/training/plot.js';

interface Element { name: string; attrs: Record<string, string>; text: string; children: Element[] }

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function unescape(text: string, where: string): string {
  return text.replace(/&([^;]*);?/g, (all, name: string) => {
    if (!all.endsWith(';')) throw new Error(`bare & in ${where}`);
    if (name in ENTITIES) return ENTITIES[name]!;
    const code = /^#(\d+)$/.exec(name)?.[1] ?? (/^#x([0-9a-f]+)$/i.exec(name) ? String(parseInt(name.slice(2), 16)) : undefined);
    if (code === undefined) throw new Error(`unknown entity &${name}; in ${where}`);
    return String.fromCodePoint(Number(code));
  });
}

/** A strict parser for the XML subset an SVG writer emits; throws on anything not well-formed. */
function parseXml(xml: string): Element {
  let at = 0;
  const fail = (why: string): never => { throw new Error(`${why} at offset ${at}: ${JSON.stringify(xml.slice(at, at + 40))}`); };
  const declaration = /^<\?xml[^?]*\?>\s*/.exec(xml);
  if (declaration) at = declaration[0].length;
  const root: Element = { name: '#document', attrs: {}, text: '', children: [] };
  const stack = [root];
  while (at < xml.length) {
    if (xml.startsWith('</', at)) {
      const m = /^<\/([A-Za-z][\w:.-]*)\s*>/.exec(xml.slice(at)) ?? fail('bad end tag');
      const open = stack.pop()!;
      if (open.name !== m[1]) fail(`</${m[1]}> closes <${open.name}>`);
      at += m[0].length;
    } else if (xml[at] === '<') {
      const m = /^<([A-Za-z][\w:.-]*)((?:\s+[A-Za-z][\w:.-]*\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>/.exec(xml.slice(at)) ?? fail('bad start tag');
      const attrs: Record<string, string> = {};
      for (const a of m[2]!.matchAll(/([A-Za-z][\w:.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
        if (a[1]! in attrs) fail(`duplicate attribute ${a[1]}`);
        attrs[a[1]!] = unescape(a[2] ?? a[3]!, `attribute ${a[1]}`);
      }
      const element: Element = { name: m[1]!, attrs, text: '', children: [] };
      stack.at(-1)!.children.push(element);
      if (stack.length === 1 && root.children.length > 1) fail('two root elements');
      if (m[3] !== '/') stack.push(element);
      at += m[0].length;
    } else {
      const end = xml.indexOf('<', at);
      const text = xml.slice(at, end < 0 ? xml.length : end);
      if (stack.length === 1 && text.trim() !== '') fail('text outside the root');
      stack.at(-1)!.text += unescape(text, `<${stack.at(-1)!.name}> text`);
      at += text.length;
    }
  }
  if (stack.length !== 1) fail(`<${stack.at(-1)!.name}> is never closed`);
  if (root.children.length !== 1) fail('no root element');
  return root.children[0]!;
}

const all = (e: Element, name: string): Element[] => [...(e.name === name ? [e] : []), ...e.children.flatMap((c) => all(c, name))];
const byClass = (e: Element, cls: string) => [...all(e, 'polyline'), ...all(e, 'text')].filter((x) => x.attrs['class'] === cls);
const pointsOf = (line: Element) => line.attrs['points']!.split(' ').map((p) => p.split(',').map(Number) as [number, number]);

const curve = (name: string, losses: number[], dashed = false): LossSeries =>
  ({ name, dashed, points: losses.map((loss, i) => ({ step: (i + 1) * 10, loss })) });

test('the SVG is well-formed, with one polyline per series, a legend entry each and labelled ticks', () => {
  const train = curve('train', [4, 3.5, 3.1, 2.9, 2.8, 2.6]);
  const neftune = curve('train, NEFTune alpha 5', [4, 3.6, 3.2, 3, 2.9, 2.7]);
  const evalCurve: LossSeries = { name: 'eval', dashed: true, points: [{ step: 30, loss: 3.3 }, { step: 60, loss: 3 }] };
  const svg = parseXml(lossPlotSvg([train, neftune, evalCurve], { title: 'Loss', width: 600, height: 400 }));
  assert.equal(svg.name, 'svg');
  assert.equal(svg.attrs['xmlns'], 'http://www.w3.org/2000/svg');
  const lines = byClass(svg, 'curve');
  assert.equal(lines.length, 3);
  assert.deepEqual(lines.map((l) => pointsOf(l).length), [6, 6, 2]);
  assert.equal(lines[2]!.attrs['stroke-dasharray'], '6 4');
  assert.deepEqual(byClass(svg, 'legend-label').map((t) => t.text), ['train', 'train, NEFTune alpha 5', 'eval']);
  assert.equal(byClass(svg, 'title')[0]!.text, 'Loss');
  // Points stay inside the plot; the falling loss goes down the picture (SVG y grows downwards).
  const pts = pointsOf(lines[0]!);
  assert.ok(pts.every(([x, y]) => x >= 0 && x <= 600 && y >= 0 && y <= 400));
  assert.ok(pts[5]![1] > pts[0]![1]);
  assert.ok(pts.every((p, i) => i === 0 || p[0] > pts[i - 1]![0]), 'steps left to right');
  const xticks = byClass(svg, 'xtick').map((t) => Number(t.text));
  const yticks = byClass(svg, 'ytick').map((t) => Number(t.text));
  assert.ok(xticks.length >= 3 && xticks.every((t) => t >= 10 && t <= 60), `x ticks ${xticks}`);
  assert.ok(yticks.length >= 3 && yticks.every((t) => t >= 2.4 && t <= 4.2), `y ticks ${yticks}`);
});

test('every user-supplied text is escaped (names, title, axis labels)', () => {
  const evil = '</text><script>alert("x")</script> & \'q\' \u0001';
  const svgText = lossPlotSvg([curve(evil, [1, 2])], { title: evil, xLabel: `${evil}x`, yLabel: `${evil}y` });
  assert.ok(!svgText.includes('<script>'));
  const svg = parseXml(svgText);
  assert.equal(all(svg, 'script').length, 0);
  const expected = evil.replace('\u0001', '\ufffd');
  assert.equal(byClass(svg, 'legend-label')[0]!.text, expected);
  assert.equal(byClass(svg, 'title')[0]!.text, expected);
  assert.equal(byClass(svg, 'xlabel')[0]!.text, `${expected}x`);
  assert.equal(byClass(svg, 'ylabel')[0]!.text, `${expected}y`);
  assert.equal(escapeXml(`a"b'c<d>e&f`), 'a&quot;b&#39;c&lt;d&gt;e&amp;f');
});

test('NaN, infinite and empty series: left out and said so in the legend; an all-empty plot is still a valid SVG', () => {
  const broken: LossSeries = { name: 'diverged', points: [{ step: 1, loss: 2 }, { step: 2, loss: NaN }, { step: 3, loss: Infinity }, { step: 4, loss: 1.5 }] };
  const svg = parseXml(lossPlotSvg([broken, { name: 'empty', points: [] }, curve('single', [3])]));
  const lines = byClass(svg, 'curve');
  assert.deepEqual(lines.map((l) => pointsOf(l).length), [2, 1]);
  assert.ok(lines.every((l) => pointsOf(l).flat().every(Number.isFinite)), 'no NaN coordinates');
  assert.deepEqual(byClass(svg, 'legend-label').map((t) => t.text), ['diverged (2 non-finite left out)', 'empty (no data)', 'single']);
  const none = parseXml(lossPlotSvg([]));
  assert.equal(byClass(none, 'curve').length, 0);
  assert.equal(all(none, 'text').find((t) => t.attrs['class'] === 'empty')!.text, 'no data');
  const flat = parseXml(lossPlotSvg([curve('flat', [2, 2, 2])]));
  assert.ok(pointsOf(byClass(flat, 'curve')[0]!).flat().every(Number.isFinite), 'a constant loss still has a y range');
});

test('smoothing: a debiased moving average drawn over a faint raw copy', () => {
  assert.deepEqual(smoothLosses([1, 2, 3], 0), [1, 2, 3]);
  const s = smoothLosses([4, 2], 0.5);
  assert.equal(s[0], 4, 'debiased: the first point is itself');
  assert.equal(s[1], (0.5 * 0.5 * 4 + 0.5 * 2) / (1 - 0.25));
  const noisy = Array.from({ length: 50 }, (_, i) => 3 - i * 0.02 + (i % 2 ? 0.4 : -0.4));
  const svg = parseXml(lossPlotSvg([curve('noisy', noisy)], { smoothing: 0.9 }));
  const [raw, smooth] = [byClass(svg, 'raw')[0]!, byClass(svg, 'curve')[0]!];
  assert.equal(raw.attrs['stroke-opacity'], '0.25');
  const wiggle = (l: Element) => pointsOf(l).slice(1).reduce((sum, p, i) => sum + Math.abs(p[1] - pointsOf(l)[i]![1]), 0);
  assert.ok(wiggle(smooth) < wiggle(raw) / 4, `smoothed ${wiggle(smooth)} vs raw ${wiggle(raw)}`);
  assert.throws(() => lossPlotSvg([], { smoothing: 1 }), RangeError);
});

test('ticks are round numbers covering the range', () => {
  assert.deepEqual(niceTicks(0, 100), [0, 20, 40, 60, 80, 100]);
  assert.deepEqual(niceTicks(2.43, 3.07), [2.5, 2.6, 2.7, 2.8, 2.9, 3]);
  assert.deepEqual(niceTicks(1, 7, 3), [2, 4, 6]);
});

test('the checker rejects what is not well-formed (so the tests above can fail)', () => {
  assert.throws(() => parseXml('<svg><text>a & b</text></svg>'), /bare &/);
  assert.throws(() => parseXml('<svg><g></svg>'), /closes/);
  assert.throws(() => parseXml('<svg a="1" a="2"/>'), /duplicate/);
  assert.throws(() => parseXml('<svg><text>x</text>'), /never closed/);
  assert.throws(() => parseXml('<svg t="<"/>'), /bad start tag/);
});
