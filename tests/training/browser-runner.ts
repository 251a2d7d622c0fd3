/**
 * Runs training-step graphs in headless Chromium with onnxruntime-web: a loopback server serves an
 * empty page (loopback is a secure context, so `navigator.gpu` exists), ORT-web's dist files and the
 * model bytes; the step loop runs in the page with each `.new` output fed back as the next input.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import type ort from 'onnxruntime-node';
import type { TrainingStepRecord } from '../../src/training/step.js';
import { projectRoot } from '../helpers.js';

export const CHROMIUM = [process.env['CHROMIUM'], '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p && existsSync(p));

/** What exposes WebGPU on SwiftShader's Vulkan in headless Chromium (no GPU needed). */
export const WEBGPU_ARGS = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];

/**
 * onnxruntime-web bundles: `webgpu` is the native (C++) WebGPU EP on the asyncify wasm; `jsep` is
 * the older JavaScript WebGPU kernels (ort.all / ort.min). Both also run the wasm (CPU) EP.
 */
export const ORT_BUNDLES = { webgpu: 'ort.webgpu.min.mjs', jsep: 'ort.all.min.mjs' } as const;
export type OrtBundle = keyof typeof ORT_BUNDLES;

const ORT_DIST = path.join(projectRoot, 'node_modules', 'onnxruntime-web', 'dist');
const MIME: Record<string, string> = { '.html': 'text/html', '.mjs': 'text/javascript', '.wasm': 'application/wasm' };

/** A tensor as it crosses into the page: bytes in base64. */
export interface WireTensor { type: 'float32' | 'int64'; dims: number[]; base64: string }

export function toWire(t: ort.Tensor): WireTensor {
  if (t.type !== 'float32' && t.type !== 'int64') throw new Error(`browser runner: no wire form for ${t.type}`);
  const data = t.data as Float32Array | BigInt64Array;
  return { type: t.type, dims: [...t.dims], base64: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64') };
}

export function fromWire(w: WireTensor): Float32Array {
  const bytes = Buffer.from(w.base64, 'base64');
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

export interface PageRun {
  losses: number[];
  /** Parameters after the last step. */
  params: Record<string, WireTensor>;
  /** Every console line the page printed (ORT's verbose log included). */
  log: string[];
}

export interface StepPage {
  page: Page;
  /** The adapter WebGPU reports, or why there is none. */
  adapter: () => Promise<{ ok: true; vendor: string; architecture: string } | { ok: false; reason: string }>;
  /** Creates one session for `model` on `ep` and runs `steps` steps from `feeds`, wiring outputs back. */
  runSteps: (model: Uint8Array, feeds: Record<string, ort.Tensor>, record: TrainingStepRecord, options: { ep: 'webgpu' | 'wasm'; bundle: OrtBundle; steps: number }) => Promise<PageRun>;
  close: () => Promise<void>;
}

function serve(blobs: Map<string, Uint8Array>): Promise<{ server: Server; origin: string }> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const [, dir, name = ''] = url.pathname.split('/');
    let body: Uint8Array | undefined;
    let type = 'application/octet-stream';
    if (url.pathname === '/') { body = Buffer.from('<!doctype html><title>step</title>'); type = MIME['.html']!; }
    else if (dir === 'ort' && /^ort[\w.-]*\.(mjs|wasm)$/.test(name) && existsSync(path.join(ORT_DIST, name))) {
      body = readFileSync(path.join(ORT_DIST, name));
      type = MIME[path.extname(name)]!;
    } else if (dir === 'blob') body = blobs.get(name);
    if (!body) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': type }).end(body);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, origin: `http://127.0.0.1:${(server.address() as { port: number }).port}` })));
}

/** Launches Chromium (never downloads one) on a loopback page. Throws when Chromium is absent. */
export async function openStepPage(args: string[] = WEBGPU_ARGS): Promise<StepPage> {
  if (!CHROMIUM) throw new Error('browser runner: Chromium not found (install chromium or set CHROMIUM)');
  const blobs = new Map<string, Uint8Array>();
  const { server, origin } = await serve(blobs);
  let browser: Browser | undefined;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage', ...args], timeout: 60_000 });
    const page = await browser.newPage();
    const log: string[] = [];
    page.on('console', (m) => log.push(m.text()));
    page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
    await page.goto(`${origin}/`);
    let blobCount = 0;
    return {
      page,
      adapter: () => page.evaluate(async () => {
        const gpu = (navigator as Navigator & { gpu?: { requestAdapter(): Promise<{ info?: { vendor: string; architecture: string } } | null> } }).gpu;
        if (!gpu) return { ok: false as const, reason: `navigator.gpu is undefined (secure context: ${isSecureContext})` };
        const a = await gpu.requestAdapter();
        if (!a) return { ok: false as const, reason: 'navigator.gpu.requestAdapter() returned null' };
        return { ok: true as const, vendor: a.info?.vendor ?? '', architecture: a.info?.architecture ?? '' };
      }),
      async runSteps(model, feeds, record, { ep, bundle, steps }) {
        const id = `m${blobCount++}`;
        blobs.set(id, model);
        log.length = 0;
        const wiring = [...record.params, ...record.state].map((p) => [p.input, p.output] as [string, string]);
        const wire = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, toWire(t)]));
        try {
          const out = await page.evaluate(runInPage, {
            ortUrl: `${origin}/ort/${ORT_BUNDLES[bundle]}`, modelUrl: `${origin}/blob/${id}`, ep, steps, wiring,
            stepInput: record.step ?? null, loss: record.loss, params: record.params.map((p) => p.input), feeds: wire,
          });
          return { ...out, log: [...log] };
        } finally {
          blobs.delete(id);
        }
      },
      async close() {
        await browser?.close();
        server.close();
      },
    };
  } catch (e) {
    await browser?.close();
    server.close();
    throw e;
  }
}

interface PageArgs {
  ortUrl: string; modelUrl: string; ep: string; steps: number; wiring: Array<[string, string]>;
  stepInput: string | null; loss: string; params: string[]; feeds: Record<string, WireTensor>;
}

/** Runs in the page (serialized by Playwright: it may use nothing from this module's scope). */
async function runInPage(a: PageArgs): Promise<{ losses: number[]; params: Record<string, WireTensor> }> {
  type OrtTensor = { type: string; dims: readonly number[]; data: Float32Array | BigInt64Array; getData(): Promise<Float32Array | BigInt64Array> };
  const ortWeb = await import(a.ortUrl) as {
    env: { logLevel: string; wasm: { numThreads: number } };
    Tensor: new (type: string, data: Float32Array | BigInt64Array, dims: readonly number[]) => OrtTensor;
    InferenceSession: { create(url: string, o: object): Promise<{ run(f: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>; release(): Promise<void> }> };
  };
  ortWeb.env.wasm.numThreads = 1;
  ortWeb.env.logLevel = 'verbose';
  const decode = (w: WireTensor): OrtTensor => {
    const bytes = Uint8Array.from(atob(w.base64), (c) => c.charCodeAt(0));
    return new ortWeb.Tensor(w.type, w.type === 'float32' ? new Float32Array(bytes.buffer) : new BigInt64Array(bytes.buffer), w.dims);
  };
  const encode = (data: Float32Array, dims: readonly number[]): WireTensor => {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return { type: 'float32', dims: [...dims], base64: btoa(s) };
  };
  const session = await ortWeb.InferenceSession.create(a.modelUrl, { executionProviders: [a.ep], logSeverityLevel: 0, logVerbosityLevel: 0 });
  try {
    let feeds = Object.fromEntries(Object.entries(a.feeds).map(([k, w]) => [k, decode(w)]));
    const losses: number[] = [];
    for (let k = 1; k <= a.steps; k++) {
      const out = await session.run(feeds);
      losses.push((await out[a.loss]!.getData())[0] as number);
      const next = { ...feeds };
      for (const [input, output] of a.wiring) next[input] = out[output]!;
      if (a.stepInput) next[a.stepInput] = new ortWeb.Tensor('int64', BigInt64Array.from([BigInt(k + 1)]), []);
      feeds = next;
    }
    const params: Record<string, WireTensor> = {};
    for (const p of a.params) params[p] = encode(await feeds[p]!.getData() as Float32Array, feeds[p]!.dims);
    return { losses, params };
  } finally {
    await session.release();
  }
}

export interface Placed { op: string; node: string }

/**
 * Where ORT put each node of the optimized graph, by EP, from the verbose session log: "Node(s)
 * placed on [XExecutionProvider]. Number of nodes: N", then one "OpType (node name)" line per node.
 * Nodes ORT folded or fused away appear under no EP. Undefined when the log has no placement.
 */
export function placements(log: string[]): Map<string, Placed[]> | undefined {
  const byEp = new Map<string, Placed[]>();
  let current: Placed[] | undefined;
  for (const line of log.flatMap((l) => l.split('\n'))) {
    const ep = /Node\(s\) placed on \[(\w+)\]/.exec(line);
    if (ep) { byEp.set(ep[1]!, current = []); continue; }
    const node = current && /VerifyEachNodeIsAssignedToAnEp\]\s{2,}(\w+) \((.*)\)\s*$/.exec(line);
    if (node) current!.push({ op: node[1]!, node: node[2]! });
    else current = undefined;
  }
  return byEp.size ? byEp : undefined;
}
