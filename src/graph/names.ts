import type { Model } from './ir.js';

/** A set of names that hands out fresh ones: `base`, then `base_1`, `base_2`, ... */
export class NameSet {
  private readonly taken = new Set<string>();
  private readonly nextSuffix = new Map<string, number>();

  /** `base` itself if free, else `base_1`, `base_2`, ...; the name is reserved on return. */
  fresh(base: string): string {
    let name = base;
    // Remember where each base's numbering got to, so repeated bases stay O(1) per name.
    let i = this.nextSuffix.get(base) ?? 1;
    while (this.taken.has(name)) name = `${base}_${i++}`;
    this.nextSuffix.set(base, i);
    this.taken.add(name);
    return name;
  }

  /** Reserves `name` exactly; throws if it is taken. */
  claim(name: string): string {
    if (this.taken.has(name)) throw new TypeError(`Name "${name}" is already used in this model`);
    this.taken.add(name);
    return name;
  }

  add(name: string): void { this.taken.add(name); }
  has(name: string): boolean { return this.taken.has(name); }
}

/**
 * Hands out value and node names that no scope of the model uses yet: main graph, subgraphs,
 * functions and training graphs. Existing names are never changed; callers that add things ask
 * here instead of checking uniqueness themselves.
 */
export class NameAllocator extends NameSet {
  constructor(model: Model) {
    super();
    for (const graph of model.allGraphs()) {
      for (const v of [...graph.inputs, ...graph.outputs, ...graph.valueInfo, ...graph.initializers, ...graph.sparseInitializers]) this.add(v.name);
      for (const name of graph.scope.keys()) this.add(name);
      for (const node of graph) {
        if (node.name !== undefined) this.add(node.name);
        for (const v of node.inputs) if (v) this.add(v.name);
        for (const v of node.outputs) if (v) this.add(v.name);
      }
    }
    for (const fn of model.functions) this.add(fn.name);
  }
}
