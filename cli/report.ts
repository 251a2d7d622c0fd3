/** Prints a CliResult for people. */
import type { CliResult, FileResult, ModelSummary } from './commands.js';
import type { IoJson, StepSummary } from './step.js';
import { bold, dim, green, megabytes, red, table, yellow } from './output.js';

export function printHuman(result: CliResult, out: (line: string) => void, err: (line: string) => void): void {
  if (result.error) { err(red(`error: ${result.error.message}`)); return; }
  for (const file of result.files) {
    if (result.command === 'inspect' && file.model) printInspect(file, file.model, out);
    else if (result.command === 'verify' && file.verify) printVerify(file, out);
    else if (file.step) { printFile(file, out, err); printStep(file.step, file.output === '-' ? err : out); }
    else printFile(file, out, err);
  }
  const skipped = result.skipped ?? [];
  for (const s of skipped) err(yellow(`skipped ${s.path}: ${s.reason}`));
  if (result.command !== 'inspect' && (result.files.length > 1 || skipped.length)) {
    const s = result.summary;
    const line = `${s.total} file${s.total === 1 ? '' : 's'}: ${s.succeeded} succeeded, ${s.failed} failed` +
      (skipped.length ? `; ${skipped.length} folder entr${skipped.length === 1 ? 'y' : 'ies'} skipped` : '');
    (s.failed ? err : out)(s.failed ? red(line) : green(line));
  }
}

function printFile(f: FileResult, out: (line: string) => void, err: (line: string) => void): void {
  const shown = (p: string) => (p === '-' ? 'stdin' : p);
  const arrow = f.output === '-' ? ' -> stdout' : f.output && f.output !== f.input ? ` -> ${f.output}` : f.output ? ' (in place)' : '';
  if (f.status === 'failed') {
    err(`${red('failed')} ${shown(f.input)}: ${f.error!.message}`);
    // Which folder rule applied (e.g. a training-artifacts folder, of which nothing was copied).
    if (f.note) err(`  ${f.note}`);
    for (const u of f.unsupportedOps ?? []) err(`  ${u.op} "${u.node}": ${u.why}`);
    return;
  }
  const label = f.status === 'unchanged' ? yellow('unchanged') : green(f.status);
  const line = `${label} ${shown(f.input)}${arrow}: ${f.message}`;
  // When the model itself goes to stdout, all messages go to stderr.
  (f.output === '-' ? err : out)(line);
  // Warnings go to stderr, apart from the file's line on stdout: each names its file.
  for (const w of f.warnings) err(yellow(`warning: ${shown(f.input)}: ${w}`));
}

function printInspect(f: FileResult, m: ModelSummary, out: (line: string) => void): void {
  out(`${bold(f.input)}  ${megabytes(m.bytes)}, ${m.nodes} nodes`);
  out(`  IR version ${m.irVersion}; opsets ${m.opsets.map((o) => `${o.domain || 'ai.onnx'} ${o.version}`).join(', ') || '(none)'}${m.producer ? `; producer ${m.producer}` : ''}`);
  if (m.patched) {
    const p = m.patch;
    out(`  ${yellow('NEFTune patch present')}${p ? `: alpha ${p.options.alphaInput ? 'from a graph input' : p.options.alpha}, mode ${p.options.mode}${p.options.seed !== undefined ? `, seed ${p.options.seed}` : ''}, ${p.sites.length} site(s): ${p.sites.map((s) => s.value).join(', ')} (onnx-neftune ${p.version})` : ' (record missing; nodes with the reserved prefix found)'}`);
  } else {
    out(`  not patched`);
  }
  if (m.externalData.length) {
    out('  external data:');
    for (const d of m.externalData) out(`    ${d.location}  ${d.present ? `${megabytes(d.bytes!)}, present` : red('MISSING')}  (${d.tensors} tensor${d.tensors === 1 ? '' : 's'})`);
  }
  const e = m.embeddings;
  if (!e.candidates.length) {
    out('  no embedding lookups found');
  } else {
    out('  embedding lookups:');
    const rows = [['', 'node', 'kind', 'table', 'rows x dim', 'dtype', 'storage', 'indices', 'role']];
    for (const c of e.candidates) {
      rows.push([
        c.defaultTarget ? '*' : ' ', c.node + (c.graphPath.length > 1 ? ` [${c.graphPath.slice(1).join(' / ')}]` : ''), c.kind, c.table.name,
        `${c.table.rows ?? '?'} x ${c.table.dim ?? '?'}`, c.table.dtype ?? '?',
        c.table.storage + (c.table.outerScope ? ' (outer)' : '') + (c.table.via.length ? ` via ${c.table.via.join('<-')}` : ''),
        c.indices.derivation ? `${c.indices.source}: ${c.indices.derivation}` : c.indices.input ? `${c.indices.source}: ${c.indices.input}` : c.indices.source,
        c.role + (c.patchable ? '' : c.invalidReason ? ' (invalid)' : c.kind === 'EmbedLayerNormalization' ? ' (fused)' : ' (not patchable)'),
      ]);
    }
    out(table(rows).split('\n').map((l) => `    ${l}`).join('\n'));
    for (const c of e.candidates) {
      out(dim(`    ${c.node}: ${c.reasons.join('; ')}${c.scale ? `; followed by scale Mul ${c.scale.node}${c.scale.factor !== null ? ` (x${c.scale.factor})` : ''}` : ''}${c.notPatchableReason ? `; not patchable: ${c.notPatchableReason}` : ''}`));
    }
  }
  if (e.nearMisses.length) {
    out('  not taken as embedding lookups:');
    for (const n of e.nearMisses) out(dim(`    ${n.node}${n.graphPath.length > 1 ? ` [${n.graphPath.slice(1).join(' / ')}]` : ''}: ${n.reason}`));
  }
  out(`  default target${e.defaultTarget.length ? ' (*)' : ''}: ${e.targetReason}`);
}

function printVerify(f: FileResult, out: (line: string) => void): void {
  for (const r of f.verify!) {
    const head = `${r.ok ? green('PASS') : red('FAIL')} ${f.input} on ${r.ep} (ONNX Runtime ${r.ortVersion})`;
    if (!r.patched || !r.sites.length) {
      out(`${head}: ${r.message}`);
      for (const c of r.candidates) out(`    candidate: ${c}`);
      continue;
    }
    out(`${head}: mode ${r.mode}, alpha ${r.alpha}, ${r.runs} run${r.runs === 1 ? '' : 's'}, ran ${r.ran === 'whole' ? 'the whole model' : `the slice to the noisy embeddings (${r.sliceReason})`}`);
    for (const s of r.sites) {
      out(`  ${s.ok ? green('ok  ') : red('FAIL')} ${s.value} (${s.lookup}, table ${s.table}, ${s.dtype})`);
      // What was fed, not what was asked: fixed dims and dims sized by their use show here.
      out(dim(`      fed ${s.inputs.map((i) => `${i.name} [${i.dims.join(', ')}]`).join(', ') || 'no inputs'}`));
      for (const c of s.checks) out(`      ${c.ok ? 'ok  ' : red('FAIL')} ${c.name.padEnd(10)} ${c.detail}`);
      for (const c of s.notRun) out(`      ${yellow('not run')} ${c.name.padEnd(10)} ${c.reason}`);
    }
    for (const note of r.notes) out(`  ${yellow('note')}: ${note}`);
  }
}

function printStep(s: StepSummary, out: (line: string) => void): void {
  const io = (v: IoJson) => [v.name, v.role, v.type ?? '?', v.dims ? `[${v.dims.map((d) => d ?? '?').join(', ')}]` : '?'];
  const hyper = Object.entries(s.hyperparameters).map(([k, v]) => `${k} ${v}`).join(', ');
  out(`  loss ${bold(s.loss)}; optimizer ${s.optimizer} (${hyper}); learning rate input ${s.learningRate}${s.step ? `; step input ${s.step} (int64, 1 for the first step)` : ''}`);
  out(`  nodes: ${s.nodes.step} (forward ${s.nodes.forward})`);
  const gather = s.record.gatherGradient;
  if (gather && gather !== 'none') out(`  embedding gradients: ${gather === 'scatternd-add' ? 'ScatterND with reduction=add (opset 16+)' : 'one-hot MatMul (the model\'s opset is below 16; memory grows with rows x vocab)'}`);
  const dropped = s.record.droppedInputs ?? [];
  if (dropped.length) out(`  inputs of the forward model the step no longer reads (removed; do not feed them): ${dropped.join(', ')}`);
  const padding = Object.entries(s.record.paddingRows ?? {});
  if (padding.length) out(`  padding rows (no gradient from their lookups): ${padding.map(([t, r]) => `${t}[${r}]`).join(', ')}`);
  out(`  parameters: ${s.params.count} (${s.params.elements} elements), each fed as <name> and returned as <name>.new; initial values are the source model's initializers`);
  out(table([['name', 'elements', 'new value', 'gradient'], ...s.params.list.map((p) => [p.input, String(p.elements), p.output, p.grad ?? ''])]).split('\n').map((l) => `    ${l}`).join('\n'));
  out(`  frozen: ${s.frozen.count}${s.frozen.count ? ` (${s.frozen.elements} elements): ${s.frozen.names.join(', ')}` : ''}`);
  out(`  optimizer state:${s.state.length ? '' : ' none'}`);
  for (const st of s.state) out(`    ${st.input} -> ${st.output} (${st.kind} of ${st.param}; zeros before the first step)`);
  out(`  inputs:`);
  out(table([['name', 'role', 'type', 'dims'], ...s.inputs.map(io)]).split('\n').map((l) => `    ${l}`).join('\n'));
  out(`  outputs:`);
  out(table([['name', 'role', 'type', 'dims'], ...s.outputs.map(io)]).split('\n').map((l) => `    ${l}`).join('\n'));
  const fallbacks = `  run-time shape fallbacks: ${s.runtimeShapeFallbacks}`;
  out(s.runtimeShapeFallbacks ? yellow(`${fallbacks} (gradient reductions whose axes are found at run time: declare static shapes to avoid them)`) : fallbacks);
}
