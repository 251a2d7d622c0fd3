/**
 * `npm run web`: serves the browser app on loopback with node:http. The page and its bundles come
 * from dist/web/static, ONNX Runtime's browser files from node_modules/onnxruntime-web/dist (under
 * /ort/); nothing else is reachable: paths that leave those folders are refused.
 */
import { createReadStream, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const MOUNTS: Array<[string, string]> = [
  ['/ort/', path.join(root, 'node_modules', 'onnxruntime-web', 'dist')],
  ['/', path.join(root, 'dist', 'web', 'static')],
];
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.jsonl': 'application/jsonl', '.map': 'application/json',
};

/** The file a URL path names, or undefined when it leaves the served folders or is not a file. */
export function resolveRequest(urlPath: string): string | undefined {
  let decoded: string;
  try { decoded = decodeURIComponent(urlPath); } catch { return undefined; }
  if (decoded.includes('\0')) return undefined;
  const [prefix, folder] = MOUNTS.find(([p]) => decoded.startsWith(p))!;
  const file = path.resolve(folder, `.${path.posix.sep}${decoded.slice(prefix.length)}`);
  if (file !== folder && !file.startsWith(folder + path.sep)) return undefined;
  const target = file === folder || decoded.endsWith('/') ? path.join(file, 'index.html') : file;
  try { return statSync(target).isFile() ? target : undefined; } catch { return undefined; }
}

export function startServer(port = 0, host = '127.0.0.1'): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    const file = req.method === 'GET' || req.method === 'HEAD' ? resolveRequest(new URL(req.url ?? '/', 'http://localhost').pathname) : undefined;
    if (!file) { res.writeHead(404, { 'content-type': 'text/plain' }).end('Not found\n'); return; }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-cache' });
    if (req.method === 'HEAD') { res.end(); return; }
    createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve({ server, url: `http://${host}:${(server.address() as { port: number }).port}/` }));
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const port = Number(process.env['PORT'] ?? 8080);
  startServer(port).then(({ url }) => console.log(`onnx-neftune browser app: ${url}  (Ctrl+C stops it)`), (error) => {
    console.error(`Cannot serve on port ${port}: ${(error as Error).message}. Set PORT to another port.`);
    process.exitCode = 1;
  });
}
