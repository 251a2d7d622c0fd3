/** Target choice: which lookups a patch adds noise to (the default token table, or what the options name). */
import { OnnxModelError, errorMessage, optionName } from '../../graph/errors.js';
import { describeCandidate, type EmbeddingCandidate, type EmbeddingReport } from '../embeddings.js';
import { AmbiguousEmbeddingError, NoEmbeddingError, PatchOptionError } from '../errors.js';
import type { NormalizedOptions } from './options.js';

/** Chooses the lookups to patch: the default token table, or what the options name. */
export function selectTargets(report: EmbeddingReport, options: NormalizedOptions): EmbeddingCandidate[] {
  const shownCandidates = 50;
  const listing = () => report.candidates.length
    ? `Candidates:\n${report.candidates.slice(0, shownCandidates).map((c) => `  - ${describeCandidate(c)}`).join('\n')}${report.candidates.length > shownCandidates ? `\n  ... and ${report.candidates.length - shownCandidates} more (neftune inspect lists them all)` : ''}`
    : 'The model has no embedding lookups (Gather on a 2-D table, GatherBlockQuantized, ATen embedding).';
  const how = errorMessage`Choose with ${optionName('tables')} or ${optionName('nodes')} (names, each repeatable) or ${optionName('allCandidates')}.`;
  const refuseInvalid = (invalid: EmbeddingCandidate[], what: string): never => {
    const shown = invalid.slice(0, 10).map((c) => `${c.nodeLabel}: ${c.invalidReason}`).join('; ') + (invalid.length > 10 ? `; ... and ${invalid.length - 10} more` : '');
    throw new OnnxModelError(`${what} cannot be patched: the model is malformed there: ${shown}. Fix or re-export the model.`);
  };
  let chosen: EmbeddingCandidate[];
  if (options.allCandidates) {
    chosen = report.candidates.filter((c) => c.patchable);
  } else if (options.tables?.length || options.nodes?.length) {
    // Grouped once (Maps: any name, `__proto__` included, is a plain key); a Set keeps each lookup once.
    const byTable = new Map<string, EmbeddingCandidate[]>();
    const byNode = new Map<string, EmbeddingCandidate[]>();
    const add = (map: Map<string, EmbeddingCandidate[]>, key: string, c: EmbeddingCandidate) => {
      const list = map.get(key);
      if (list) list.push(c); else map.set(key, [c]);
    };
    for (const c of report.candidates) {
      add(byTable, c.table.name, c);
      if (c.node.name !== undefined) add(byNode, c.node.name, c);
    }
    const picked = new Set<EmbeddingCandidate>();
    for (const name of options.tables ?? []) {
      const hits = byTable.get(name);
      if (!hits) throw new PatchOptionError(errorMessage`No embedding lookup reads a table named "${name}" (${optionName('tables')}). ${listing()}`);
      for (const c of hits) picked.add(c);
    }
    for (const name of options.nodes ?? []) {
      const hits = byNode.get(name);
      if (!hits) throw new PatchOptionError(errorMessage`No embedding lookup node is named "${name}" (${optionName('nodes')}). ${listing()}`);
      for (const c of hits) picked.add(c);
    }
    chosen = [...picked];
    const invalid = chosen.filter((c) => c.invalidReason);
    if (invalid.length) refuseInvalid(invalid, invalid.length > 1 ? 'The selected lookups' : 'The selected lookup');
    const fused = chosen.filter((c) => !c.patchable);
    if (fused.length) throw new NoEmbeddingError(`${fused[0]!.nodeLabel} cannot be patched: ${fused[0]!.notPatchableReason}`);
  } else if (report.ambiguous) {
    throw new AmbiguousEmbeddingError(errorMessage`Cannot tell which table is the token embedding: ${report.targetReason}. ${how}\n${listing()}`,
      report.candidates.map(describeCandidate));
  } else {
    chosen = report.defaultTarget;
  }
  if (!chosen.length) {
    const invalid = report.candidates.filter((c) => c.invalidReason && (options.allCandidates || c.role === 'token'));
    if (invalid.length) refuseInvalid(invalid, options.allCandidates ? 'No lookup' : 'The token embedding');
    // Choosing by table or node helps only when some candidate can be patched (not when all are fused or need a newer opset).
    const choosable = report.candidates.some((c) => c.patchable);
    const what = options.allCandidates ? 'No candidate can be patched' : 'No token embedding to patch';
    throw new NoEmbeddingError(choosable ? errorMessage`${what}: ${report.targetReason}. ${how}\n${listing()}` : `${what}: ${report.targetReason}.\n${listing()}`);
  }
  return chosen;
}
