/**
 * The browser app's page: files in, the model's summary, the options form (made from the pass's
 * option schema), results and downloads. All model work runs in worker.ts; this thread only draws.
 */
import { NEFTUNE_OPTIONS, type NeftuneOptions } from '../src/passes/neftune/options.js';
import { optionProblem, defaultText, type OptionSpec } from '../src/passes/schema.js';
import type { SiteReport, VerifyReport } from '../src/verify/index.js';
import type { ModelSummary, Reply, Request, WorkerError } from './protocol.js';
import { errorWords, labelOf } from './words.js';
import { dropOnTrain, setupTabs, setupTrain, trainTabShown } from './train.js';
import { $, DownloadLinks } from './dom.js';

const el = <K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<HTMLElementTagNameMap[K]> = {}, ...children: Array<Node | string>): HTMLElementTagNameMap[K] => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

let worker: Worker;
let files: File[] = [];
let summary: ModelSummary | undefined;
let busyWith: Request['type'] | undefined;
const downloads = new DownloadLinks();

function startWorker(): void {
  worker = new Worker(new URL('worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = (event: MessageEvent<Reply>) => onReply(event.data);
  worker.onerror = (event) => {
    event.preventDefault();
    setBusy(undefined);
    showStatus(`The page's worker could not start (${event.message || 'its script did not load'}): serve the page with "npm run web" and reload it.`, true);
  };
}

function send(request: Request, text: string): void {
  setBusy(request.type);
  showStatus(text);
  worker.postMessage(request);
}

function showStatus(text: string, problem = false): void {
  const status = $('status');
  status.textContent = text;
  status.className = problem ? 'problem' : '';
}

function setBusy(what: Request['type'] | undefined): void {
  busyWith = what;
  $('busy').hidden = !what;
  ($('progress') as HTMLProgressElement).value = 0;
  for (const id of ['patch', 'strip', 'strip-open']) ($(id) as HTMLButtonElement).disabled = !!what;
  document.body.setAttribute('aria-busy', String(!!what));
}

/** Everything a previous file left on the page goes. */
function reset(): void {
  summary = undefined;
  for (const id of ['summary', 'options', 'results', 'stripped', 'error']) $(id).hidden = true;
  for (const id of ['facts', 'data-files', 'candidates', 'target', 'near-misses', 'fields', 'verdict', 'warnings', 'checks', 'histograms', 'notes', 'strip-message', 'error']) $(id).replaceChildren();
  downloads.revokeAll();
  for (const id of ['download-model', 'download-report', 'download-stripped']) $(id).removeAttribute('href');
}

function openFiles(list: FileList | File[]): void {
  if (!list.length) return;
  files = [...list];
  reset();
  if (busyWith) restartWorker();
  send({ type: 'open', files }, `Opening ${files.map((f) => f.name).join(', ')}…`);
}

function restartWorker(): void {
  worker.terminate();
  startWorker();
}

function showError(error: WorkerError): void {
  const words = errorWords(error, modelName());
  const box = $('error');
  box.replaceChildren(el('p', {}, el('strong', {}, words.what)), el('p', {}, words.where), el('p', {}, words.todo));
  box.hidden = false;
  showStatus(`${words.what} ${words.todo}`, true);
}

const modelName = (): string => summary?.name ?? files.find((f) => /\.onnx$/i.test(f.name))?.name ?? files[0]?.name ?? 'the model';
const stem = (): string => modelName().replace(/\.onnx$/i, '');

function onReply(reply: Reply): void {
  if (reply.type === 'progress') {
    const bar = $('progress') as HTMLProgressElement;
    bar.max = reply.steps;
    bar.value = reply.step - 0.5;
    showStatus(`${reply.text} (step ${reply.step} of ${reply.steps})…`);
    return;
  }
  setBusy(undefined);
  if (reply.type === 'error') { showError(reply.error); return; }
  $('error').hidden = true;
  if (reply.type === 'opened') showSummary(reply.summary);
  else if (reply.type === 'patched') showResults(reply);
  else showStripped(reply.model, reply.message);
}

function showSummary(s: ModelSummary): void {
  summary = s;
  const said = note;
  note = '';
  const facts: Array<[string, string]> = [
    ['File', `${s.name} (${megabytes(s.bytes)})`], ['Producer', s.producer || '(not recorded)'], ['IR version', String(s.irVersion)],
    ['Opsets', s.opsets], ['Nodes', String(s.nodes)], ['Inputs', s.inputs.join('; ') || '(none)'], ['Outputs', s.outputs.join('; ') || '(none)'],
    ['NEFTune patch', s.patched ? s.patchText ?? 'present (record missing)' : 'not patched'],
  ];
  $('facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  const missing = s.externalData.filter((d) => !d.present);
  $('data-files').replaceChildren(...(s.externalData.length ? [
    table(['External data file', 'Tensors', 'Given'], s.externalData.map((d) => [d.location, String(d.tensors), d.present ? `yes, ${megabytes(d.bytes!)}` : 'MISSING'])),
    ...(missing.length ? [el('p', { className: 'problem' }, `Data file${missing.length > 1 ? 's' : ''} ${missing.map((d) => d.location).join(', ')} not given: the model can be patched and stripped, but ONNX Runtime cannot run it whole. Drop or pick the .onnx together with its data file to check it fully.`)] : []),
  ] : []));
  $('candidates').replaceChildren(s.candidates.length
    ? table(['Default target', 'Node', 'Kind', 'Table', 'Rows x dim', 'Type', 'Storage', 'Indices', 'Role', 'Reasons'],
      s.candidates.map((c) => [c.defaultTarget ? 'yes' : '', c.node + (c.graphPath.length ? ` [${c.graphPath.join(' / ')}]` : ''), c.kind, c.table, c.shape, c.dtype, c.storage, c.indices, c.role, c.reasons]), 'Embedding lookups')
    : el('p', {}, 'No embedding lookups found.'));
  $('target').textContent = `Default target: ${s.targetReason}`;
  $('near-misses').replaceChildren(...(s.nearMisses.length ? [el('h3', {}, 'Not taken as embedding lookups'), el('ul', {}, ...s.nearMisses.map((n) => el('li', {}, n)))] : []));
  $('summary').hidden = false;
  buildForm(s);
  $('options').hidden = false;
  $('strip-open').hidden = !s.patched;
  showStatus(`${said ? `${said} ` : ''}Opened ${s.name}: ${s.candidates.length} embedding lookup(s). Choose options and patch, or drop another model.`);
}

/** One form field per option of the schema; list options offer the model's names. */
function buildForm(s: ModelSummary): void {
  const fields = (Object.entries(NEFTUNE_OPTIONS) as Array<[string, OptionSpec]>).map(([key, spec]) => {
    const id = `opt-${key}`;
    const hint = el('span', { className: 'hint', id: `${id}-hint` }, `${spec.description}${defaultText(spec) && spec.type !== 'boolean' ? ` (default ${defaultText(spec)})` : ''}`);
    const invalid = el('span', { className: 'invalid', id: `${id}-invalid` });
    let control: HTMLElement;
    switch (spec.type) {
      case 'choice':
        control = el('select', { id, name: key }, ...spec.choices.map((c) => el('option', { value: c, selected: c === spec.default }, c)));
        break;
      case 'boolean':
        control = el('input', { id, name: key, type: 'checkbox' });
        break;
      case 'boolean-or-string':
        control = el('span', {}, el('input', { id, name: key, type: 'checkbox' }), ' ',
          el('input', { id: `${id}-name`, name: `${key}-name`, type: 'text', placeholder: spec.defaultName, ariaLabel: `${labelOf(key)} name` }));
        break;
      case 'strings': {
        const names = key === 'tables' ? s.choices.tables : key === 'nodes' ? s.choices.nodes : [];
        control = names.length
          ? el('fieldset', { id, ariaLabel: labelOf(key) }, ...names.map((n, i) => el('label', {}, el('input', { type: 'checkbox', name: key, value: n, id: `${id}-${i}` }), ` ${n} `)))
          : el('input', { id, name: key, type: 'text', placeholder: 'names, separated by commas' });
        break;
      }
      default:
        control = el('input', { id, name: key, type: 'text', inputMode: spec.type === 'number' ? 'decimal' : 'text', placeholder: defaultText(spec) });
    }
    const input = control.querySelector('input') ?? control;
    input.setAttribute('aria-describedby', `${id}-hint ${id}-invalid`);
    const label = el('label', { htmlFor: input.id || id }, labelOf(key));
    return el('div', { className: 'field' }, label, control, hint, invalid);
  });
  $('fields').replaceChildren(...fields);
}

/** The options the form asks for (only what was given) and the first problem of each field. */
function readForm(): { options: NeftuneOptions; problems: Array<[string, string]> } {
  const form = $('options-form') as HTMLFormElement;
  const options: Record<string, unknown> = {};
  const problems: Array<[string, string]> = [];
  for (const [key, spec] of Object.entries(NEFTUNE_OPTIONS) as Array<[string, OptionSpec]>) {
    const input = form.elements.namedItem(key) as HTMLInputElement | HTMLSelectElement | null;
    let value: unknown;
    if (spec.type === 'boolean') value = (input as HTMLInputElement).checked || undefined;
    else if (spec.type === 'boolean-or-string') {
      const name = (form.elements.namedItem(`${key}-name`) as HTMLInputElement).value.trim();
      value = (input as HTMLInputElement).checked ? name || true : undefined;
    } else if (spec.type === 'strings') {
      const boxes = [...form.querySelectorAll<HTMLInputElement>(`input[type=checkbox][name="${key}"]`)];
      const list = boxes.length ? boxes.filter((b) => b.checked).map((b) => b.value) : (input as HTMLInputElement).value.split(',').map((n) => n.trim()).filter(Boolean);
      value = list.length ? list : undefined;
    } else {
      const text = input!.value.trim();
      value = text === '' ? undefined : spec.type === 'number' ? Number(text) : text;
    }
    const invalid = $(`opt-${key}-invalid`);
    const problem = value === undefined ? undefined : optionProblem(spec, value);
    invalid.textContent = problem ? `${labelOf(key)} must ${problem}.` : '';
    const field = document.getElementById(`opt-${key}`);
    if (field) field.setAttribute('aria-invalid', String(!!problem));
    if (problem) problems.push([key, invalid.textContent]);
    if (value !== undefined) options[key] = value;
  }
  return { options: options as NeftuneOptions, problems };
}

function onPatch(event: Event): void {
  event.preventDefault();
  if (busyWith || !summary) return;
  const { options, problems } = readForm();
  if (problems.length) {
    showStatus(`Not patched: ${problems.map(([, m]) => m).join(' ')}`, true);
    document.getElementById(`opt-${problems[0]![0]}`)?.focus();
    return;
  }
  for (const id of ['results', 'stripped']) $(id).hidden = true;
  lastOptions = options;
  send({ type: 'patch', options }, `Patching ${summary.name}…`);
}
let lastOptions: NeftuneOptions = {};


function showResults(reply: Extract<Reply, { type: 'patched' }>): void {
  const report = reply.report;
  downloads.set('download-model', reply.model, `${stem()}.neftune.onnx`);
  const json = { tool: 'onnx-neftune (browser)', file: modelName(), provider: reply.provider, options: lastOptions, sites: reply.sites, warnings: reply.warnings, verify: report, verifyError: reply.verifyError };
  downloads.set('download-report', new Blob([JSON.stringify(json, null, 2)], { type: 'application/json' }), `${stem()}.neftune.report.json`);
  $('warnings').replaceChildren(...reply.warnings.map((w) => el('li', {}, `Warning: ${w}`)));
  $('verdict').textContent = report
    ? `${report.ok ? 'Passed' : 'Failed'}: ${reply.sites.length} site(s) patched (${reply.sites.join(', ')}); checked on ONNX Runtime ${report.ortVersion} with the ${reply.provider} provider, ${report.ran === 'whole' ? 'running the whole model' : `running the slice from the inputs to each site (${report.sliceReason})`}.`
    : `Patched ${reply.sites.length} site(s) (${reply.sites.join(', ')}); the noise was not checked.`;
  if (reply.verifyError) showError(reply.verifyError);
  $('checks').replaceChildren(...(report ? [checksTable(report)] : []));
  $('histograms').replaceChildren(...(report?.sites ?? []).filter((s) => s.stats).map(histogram));
  $('notes').replaceChildren(...(report?.notes ?? []).map((n) => el('li', {}, `Note: ${n}`)));
  $('results').hidden = false;
  const state = report ? (report.ok ? 'all checks passed' : 'some checks failed') : 'not checked';
  if (!reply.verifyError) showStatus(`Patched and verified ${modelName()} on ${reply.provider}: ${state}.${reply.warnings.length ? ` ${reply.warnings.length} warning(s).` : ''}`, !!report && !report.ok);
}

function checksTable(report: VerifyReport): HTMLTableElement {
  const rows = report.sites.flatMap((s) => [
    ...s.checks.map((c) => [s.value, c.name, c.ok ? 'pass' : 'fail', c.detail]),
    ...s.notRun.map((c) => [s.value, c.name, 'not run', c.reason]),
  ]);
  const t = table(['Site', 'Check', 'Result', 'Detail'], rows, 'Checks per site');
  for (const row of t.tBodies[0]!.rows) {
    const cell = row.cells[2]!;
    cell.className = cell.textContent === 'pass' ? 'pass' : cell.textContent === 'fail' ? 'fail' : 'skip';
  }
  return t;
}

/** The sampled noise/s as a density histogram over [-1, 1], with U(-1, 1)'s density 1/2 drawn across. */
function histogram(site: SiteReport): HTMLElement {
  const bins = site.stats!.histogram, total = bins.reduce((a, b) => a + b, 0);
  const W = 360, H = 160, pad = 24, width = 2 / bins.length, top = 1;
  const y = (density: number) => H - pad - (Math.min(density, top) / top) * (H - 2 * pad);
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('width', String(W));
  svg.setAttribute('height', String(H));
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `Histogram of noise/s at ${site.value}: ${total} samples in ${bins.length} bins over -1 to 1; uniform density 0.5 drawn as a line`);
  svg.dataset['bins'] = bins.join(',');
  const add = (tag: string, attrs: Record<string, string | number>, text?: string) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text) node.textContent = text;
    svg.append(node);
  };
  const bw = (W - 2 * pad) / bins.length;
  bins.forEach((n, i) => {
    const density = total ? n / total / width : 0;
    add('rect', { class: 'bar', x: pad + i * bw, y: y(density), width: Math.max(bw - 1, 1), height: H - pad - y(density) });
  });
  add('line', { class: 'density', x1: pad, x2: W - pad, y1: y(0.5), y2: y(0.5) });
  add('line', { x1: pad, x2: W - pad, y1: H - pad, y2: H - pad, stroke: '#333' });
  add('text', { x: pad, y: H - 6, 'text-anchor': 'middle' }, '-1');
  add('text', { x: W / 2, y: H - 6, 'text-anchor': 'middle' }, '0');
  add('text', { x: W - pad, y: H - 6, 'text-anchor': 'middle' }, '1');
  add('text', { x: W - pad, y: y(0.5) - 4, 'text-anchor': 'end' }, 'uniform density 1/2');
  return el('figure', {}, svg, el('figcaption', {}, `${site.value}: noise/s, ${total} samples (${site.ok ? 'pass' : 'fail'})`));
}

function showStripped(blob: Blob, message: string): void {
  downloads.set('download-stripped', blob, `${stem().replace(/\.neftune$/, '')}.stripped.onnx`);
  $('strip-message').textContent = message;
  $('stripped').hidden = false;
  showStatus(`Stripped: ${message}`);
}

function table(head: string[], rows: string[][], caption?: string): HTMLTableElement {
  return el('table', {},
    ...(caption ? [el('caption', { className: 'visually-hidden' }, caption)] : []),
    el('thead', {}, el('tr', {}, ...head.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...rows.map((r) => el('tr', {}, ...r.map((c) => el('td', {}, c))))));
}

const megabytes = (n: number): string => (n < 1 << 20 ? `${(n / 1024).toFixed(1)} KB` : `${(n / (1 << 20)).toFixed(1)} MB`);

function main(): void {
  setupTabs();
  setupTrain();
  startWorker();
  const input = $('file') as HTMLInputElement;
  input.disabled = false;
  input.addEventListener('change', () => { if (input.files) openFiles(input.files); input.value = ''; });
  // Drop anywhere: the whole window is the target.
  window.addEventListener('dragover', (e) => { e.preventDefault(); document.body.classList.add('dragging'); });
  window.addEventListener('dragleave', (e) => { if (!e.relatedTarget) document.body.classList.remove('dragging'); });
  window.addEventListener('drop', (e) => {
    e.preventDefault();
    document.body.classList.remove('dragging');
    if (!e.dataTransfer?.files.length) return;
    if (trainTabShown()) dropOnTrain(e.dataTransfer.files);
    else openFiles(e.dataTransfer.files);
  });
  $('options-form').addEventListener('submit', onPatch);
  const strip = () => { if (!busyWith) send({ type: 'strip' }, `Stripping ${modelName()}…`); };
  $('strip').addEventListener('click', strip);
  $('strip-open').addEventListener('click', strip);
  $('cancel').addEventListener('click', () => {
    const what = busyWith;
    restartWorker();
    setBusy(undefined);
    // The new worker knows no file yet: open the same one again (cheap next to patching).
    if (what !== 'open' && files.length) {
      worker.postMessage({ type: 'open', files } satisfies Request);
      setBusy('open');
    } else {
      reset();
    }
    note = `Cancelled ${what === 'patch' ? 'patching' : what === 'strip' ? 'stripping' : 'opening'}.`;
    showStatus(`${note}${what === 'open' ? ' Drop or choose a model.' : ''}`);
  });
  showStatus('Ready: drop an ONNX model anywhere on this page, or choose it with "Model files".');
}
/** Said before the next status line (a cancel, whose worker reopens the file). */
let note = '';

main();
