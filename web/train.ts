/**
 * The page's tabs and its Train tab: the form, Start/Stop, the live loss plot and the downloads.
 * Training runs in train-worker.ts; this thread only draws (at most once per frame).
 */
import { lossPlotSvg, type LossPoint } from '../src/training/plot.js';
import type { StepEvent } from '../src/training/trainer.js';
import type { TrainReply, TrainRequest, WorkerError } from './protocol.js';
import { BUNDLED_DATA, DEFAULT_SETTINGS, NUMBER_FIELDS, numberProblem, type TrainSettings } from './train-settings.js';
import { trainErrorWords } from './words.js';
import { $, DownloadLinks } from './dom.js';


let worker: Worker | undefined;
let running = false;
let ownData: File | null = null;
let dataName = BUNDLED_DATA;
let provider = '';
/** Why the run moved to another provider, said again when it ends. */
let providerNote = '';
let total = 0;
let runs: Array<{ name: string; events: StepEvent[] }> = [];
let neftuneOn = false;
let drawPending = false;
const downloads = new DownloadLinks();

/** ARIA tabs: arrows, Home and End move between tabs and show their panel (roving tabindex). */
export function setupTabs(): void {
  const tabs = [...document.querySelectorAll<HTMLButtonElement>('[role=tab]')];
  const select = (tab: HTMLButtonElement, focus: boolean) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute('aria-selected', String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute('aria-controls')!).hidden = !on;
    }
    if (focus) tab.focus();
  };
  for (const [i, tab] of tabs.entries()) {
    tab.addEventListener('click', () => select(tab, false));
    tab.addEventListener('keydown', (e) => {
      const to = e.key === 'ArrowRight' ? (i + 1) % tabs.length : e.key === 'ArrowLeft' ? (i - 1 + tabs.length) % tabs.length
        : e.key === 'Home' ? 0 : e.key === 'End' ? tabs.length - 1 : -1;
      if (to < 0) return;
      e.preventDefault();
      select(tabs[to]!, true);
    });
  }
}

export const trainTabShown = (): boolean => !$('panel-train').hidden;

/** Files dropped while the Train tab is shown are training data. */
export function dropOnTrain(files: FileList | File[]): void {
  const file = [...files][0];
  if (file) useOwnData(file);
}

function useOwnData(file: File): void {
  ownData = file;
  ($('data-own') as HTMLInputElement).checked = true;
  // During a run the status is the run's; the file is taken for the next one.
  if (!running) showStatus(`Training data: ${file.name} (${file.size} bytes). Start training when ready.`);
}

export function setupTrain(): void {
  const value = (id: string, v: string) => { ($(id) as HTMLInputElement).value = v; };
  for (const key of Object.keys(NUMBER_FIELDS) as Array<keyof typeof NUMBER_FIELDS>) value(`train-${key}`, String(DEFAULT_SETTINGS[key] ?? ''));
  value('train-schedule', DEFAULT_SETTINGS.schedule);
  value('train-optimizer', DEFAULT_SETTINGS.optimizer);
  const neftune = $('train-neftune') as HTMLInputElement;
  neftune.addEventListener('change', () => { ($('train-alpha') as HTMLInputElement).disabled = !neftune.checked; });
  const file = $('train-file') as HTMLInputElement;
  file.addEventListener('change', () => { if (file.files?.[0]) useOwnData(file.files[0]); file.value = ''; });
  $('train-form').addEventListener('submit', (e) => { e.preventDefault(); start(); });
  $('train-stop').addEventListener('click', () => {
    if (!running) return;
    worker!.postMessage({ type: 'stop' } satisfies TrainRequest);
    ($('train-stop') as HTMLButtonElement).disabled = true;
    showStatus('Stopping after the current step…');
  });
}

function showStatus(text: string, problem = false): void {
  const status = $('train-status');
  status.textContent = text;
  status.className = problem ? 'problem' : '';
}

/** The settings the form asks for, or the problems of its fields (marked on the fields). */
function readSettings(): { settings?: TrainSettings; problems: string[] } {
  const problems: string[] = [];
  const numbers: Partial<Record<keyof typeof NUMBER_FIELDS, number>> = {};
  const neftune = ($('train-neftune') as HTMLInputElement).checked;
  for (const key of Object.keys(NUMBER_FIELDS) as Array<keyof typeof NUMBER_FIELDS>) {
    const input = $(`train-${key}`) as HTMLInputElement;
    const problem = key === 'alpha' && !neftune ? undefined : numberProblem(key, input.value);
    $(`train-${key}-invalid`).textContent = problem ?? '';
    input.setAttribute('aria-invalid', String(!!problem));
    if (problem) problems.push(problem);
    else numbers[key] = Number(input.value.trim());
  }
  if (problems.length) return { problems };
  return {
    problems,
    settings: {
      steps: numbers.steps!, batchSize: numbers.batchSize!, lr: numbers.lr!, seed: numbers.seed!, alpha: neftune ? numbers.alpha! : null,
      compare: ($('train-compare') as HTMLInputElement).checked,
      schedule: ($('train-schedule') as HTMLSelectElement).value as TrainSettings['schedule'],
      optimizer: ($('train-optimizer') as HTMLSelectElement).value as TrainSettings['optimizer'],
    },
  };
}

function start(): void {
  if (running) return;
  const { settings, problems } = readSettings();
  if (!settings) {
    showStatus(`Not started: ${problems.join(' ')}`, true);
    document.querySelector<HTMLElement>('#train-form [aria-invalid=true]')?.focus();
    return;
  }
  const own = ($('data-own') as HTMLInputElement).checked;
  if (own && !ownData) {
    showStatus('Not started: choose a token file under "Token file" (or drop it on this tab), or use the bundled tiny data.', true);
    $('train-file').focus();
    return;
  }
  if (!worker) {
    worker = new Worker(new URL('train-worker.js', import.meta.url), { type: 'module' });
    worker.onmessage = (event: MessageEvent<TrainReply>) => onReply(event.data);
    worker.onerror = (event) => {
      event.preventDefault();
      worker?.terminate();
      worker = undefined;
      setRunning(false);
      showStatus(`The training worker could not start (${event.message || 'its script did not load'}): serve the page with "npm run web" and reload it.`, true);
    };
  }
  downloads.revokeAll();
  for (const id of ['download-trained', 'download-loss']) $(id).removeAttribute('href');
  $('train-error').hidden = true;
  runs = [];
  neftuneOn = settings.alpha !== null;
  total = settings.steps;
  dataName = own ? ownData!.name : BUNDLED_DATA;
  setRunning(true);
  showStatus(`Reading ${dataName} and building the training step…`);
  worker.postMessage({ type: 'start', settings, data: own ? ownData : null } satisfies TrainRequest);
}

function setRunning(on: boolean): void {
  running = on;
  ($('train-start') as HTMLButtonElement).disabled = on;
  ($('train-stop') as HTMLButtonElement).disabled = !on;
  $('panel-train').setAttribute('aria-busy', String(on));
}

function onReply(reply: TrainReply): void {
  switch (reply.type) {
    case 'started':
      provider = reply.provider;
      providerNote = reply.note ? ` ${reply.note}` : '';
      runs = reply.runs.map((name) => ({ name, events: [] }));
      $('train-figure').hidden = false;
      draw();
      showStatus(`Training on ${provider}: ${reply.rows} rows, ${reply.tokens} tokens of ${reply.dataName}${reply.skipped ? ` (${reply.skipped} rows without a target left out)` : ''}…${providerNote}`);
      return;
    case 'step': {
      runs[reply.run]!.events.push(reply.event);
      const e = reply.event;
      const which = runs.length > 1 ? ` (${runs[reply.run]!.name}, run ${reply.run + 1} of ${runs.length})` : '';
      showStatus(`Training on ${provider}${which}: step ${e.step} of ${total}, loss ${e.loss.toFixed(4)}, ${Math.round(tokensPerSecond())} tokens/s.`);
      if (!drawPending) { drawPending = true; requestAnimationFrame(() => { drawPending = false; draw(); }); }
      return;
    }
    case 'trained':
      setRunning(false);
      draw();
      downloads.set('download-trained', reply.model, `tiny-gpt.fine-tuned${neftuneOn ? '.neftune' : ''}.onnx`);
      downloads.set('download-loss', new Blob([reply.csv], { type: 'text/csv' }), 'tiny-gpt.losses.csv');
      showStatus(`${reply.stopped ? `Stopped after ${reply.steps} of ${total} steps` : `Trained ${reply.steps} steps`} on ${reply.provider} in ${reply.seconds.toFixed(1)} s${lossChange()}, ${Math.round(tokensPerSecond())} tokens/s. Download the fine-tuned model${reply.stopped ? ' (as trained so far)' : ''} or the losses below.${providerNote}`);
      return;
    case 'error':
      setRunning(false);
      showError(reply.error);
  }
}

function showError(error: WorkerError): void {
  const words = trainErrorWords(error, dataName);
  const box = $('train-error');
  const p = (text: string, strong = false) => { const node = document.createElement('p'); node.append(strong ? Object.assign(document.createElement('strong'), { textContent: text }) : text); return node; };
  box.replaceChildren(p(words.what, true), p(words.where), p(words.todo));
  box.hidden = false;
  showStatus(`Not trained. ${words.what} ${words.todo}`, true);
}

const tokensPerSecond = (): number => {
  const events = runs.flatMap((r) => r.events);
  const seconds = events.reduce((a, e) => a + e.seconds, 0);
  return seconds > 0 ? events.reduce((a, e) => a + e.tokens, 0) / seconds : 0;
};

/** First and last losses of each run, each the mean of up to five updates (one update's loss is noisy). */
function lossChange(): string {
  const done = runs.filter((r) => r.events.length);
  if (!done.length) return '';
  const n = Math.min(5, Math.ceil(done[0]!.events.length / 2));
  const mean = (list: StepEvent[]) => list.reduce((a, e) => a + e.loss, 0) / list.length;
  const change = (r: (typeof runs)[number]) => `${mean(r.events.slice(0, n)).toFixed(3)} to ${mean(r.events.slice(-n)).toFixed(3)}`;
  return done.length === 1
    ? `: loss ${change(done[0]!)} (means of the first and last ${n} steps)`
    : `: loss ${done.map((r) => `${change(r)} with ${r.name}`).join(', ')} (means of the first and last ${n} steps)`;
}

function draw(): void {
  const series = runs.map((r) => ({ name: r.name, points: r.events.map((e): LossPoint => ({ step: e.step, loss: e.loss })) }));
  const svg = new DOMParser().parseFromString(lossPlotSvg(series, { width: 720, height: 360, title: `Training loss per step (${dataName})` }), 'image/svg+xml').documentElement;
  const said = series.filter((s) => s.points.length).map((s) => `${s.name}: ${s.points.length} steps, from ${s.points[0]!.loss.toFixed(3)} to ${s.points.at(-1)!.loss.toFixed(3)}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', said.length ? `Loss per step. ${said.join('; ')}` : 'Loss per step: no steps yet');
  $('train-plot').replaceChildren(document.importNode(svg, true));
  $('train-caption').textContent = said.length ? `Training loss per step: ${said.join('; ')}.` : 'Waiting for the first step.';
}

