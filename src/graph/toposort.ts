import { GraphEditError } from './errors.js';
import type { Graph, Node } from './ir.js';

/**
 * Reorders `graph`'s node list topologically. Stable: among nodes that are ready, the one that
 * came first in the old order goes first, so a sorted graph is left as it is. A node that reads a
 * value inside one of its subgraphs (a capture) depends on that value's producer too.
 * Subgraphs are sorted as well unless `recursive` is false. Throws GraphEditError on a cycle.
 */
export function topologicalSort(graph: Graph, options: { recursive?: boolean } = {}): void {
  // A work list rather than recursion: subgraphs may nest deeply in models built in code.
  const work: Graph[] = [graph];
  while (work.length) {
    const sorted = sortNodeList(work.pop()!);
    if (options.recursive !== false) for (const node of sorted) for (const sub of node.subgraphs()) work.push(sub);
  }
}

function sortNodeList(graph: Graph): Node[] {
  const order = graph.nodes;
  const position = new Map<Node, number>(order.map((n, i) => [n, i]));
  const dependents: Node[][] = order.map(() => []);
  const pending = new Int32Array(order.length);

  order.forEach((node, i) => {
    const deps = new Set<Node>();
    for (const input of dependenciesOf(node)) {
      const producer = input.producer;
      if (producer && producer.graph === graph && producer !== node) deps.add(producer);
    }
    pending[i] = deps.size;
    for (const dep of deps) dependents[position.get(dep)!]!.push(node);
  });

  const heap = new MinHeap();
  pending.forEach((count, i) => { if (count === 0) heap.push(i); });
  const sorted: Node[] = [];
  while (heap.size) {
    const i = heap.pop();
    const node = order[i]!;
    sorted.push(node);
    for (const next of dependents[i]!) {
      const j = position.get(next)!;
      if (--pending[j]! === 0) heap.push(j);
    }
  }
  if (sorted.length !== order.length) {
    const stuck = order.filter((_, i) => pending[i]! > 0).slice(0, 5).map((n) => n.describe());
    throw new GraphEditError(`Graph ${graph.name ?? '(unnamed)'} has a cycle; nodes on or after it include ${stuck.join(', ')}`);
  }
  if (sorted.some((n, i) => n !== order[i])) graph._reorder(sorted);
  return sorted;
}

/** Values a node reads directly or from inside its subgraphs (values those subgraphs do not define). */
function* dependenciesOf(node: Node) {
  for (const v of node.inputs) if (v) yield v;
  for (const sub of node.subgraphs()) {
    for (const inner of sub.allNodes()) {
      for (const v of inner.inputs) if (v && !isInside(v.graph, sub)) yield v;
    }
  }
}

function isInside(graph: Graph | null, root: Graph): boolean {
  for (let g = graph; g; g = g.parentGraph) if (g === root) return true;
  return false;
}

/** Whether every node's in-graph inputs are produced earlier (captures counted). */
export function isTopologicallySorted(graph: Graph): boolean {
  const seen = new Set<Node>();
  for (const node of graph) {
    for (const v of dependenciesOf(node)) {
      if (v.producer && v.producer.graph === graph && !seen.has(v.producer) && v.producer !== node) return false;
    }
    seen.add(node);
  }
  return true;
}

class MinHeap {
  private readonly items: number[] = [];
  get size(): number { return this.items.length; }
  push(x: number): void {
    const a = this.items;
    a.push(x);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]! <= x) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = x;
  }
  pop(): number {
    const a = this.items;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= a.length) break;
        const r = l + 1;
        const c = r < a.length && a[r]! < a[l]! ? r : l;
        if (a[c]! >= last) break;
        a[i] = a[c]!;
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}
