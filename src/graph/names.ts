import { GraphEditError } from './errors.js';
import { walkGraphs, type Graph, type Model } from './ir.js';

/** A set of names that hands out fresh ones: `base`, then `base_1`, `base_2`, ... */
export class NameSet {
  /** @internal */
  private readonly taken = new Set<string>();
  /** @internal */
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
    if (this.taken.has(name)) throw new GraphEditError(`Name "${name}" is already used in this model: ask fresh("${name}") for a free one like it`);
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
 *
 * With `prefix`, only names starting with it are indexed up front (a pass that names everything
 * it adds with one prefix then never pays for indexing a million-node graph); a name outside the
 * prefix makes the allocator index everything the first time it is asked about one.
 */
export class NameAllocator extends NameSet {
  /** @internal */
  private fullyIndexed = false;
  /** @internal */
  private readonly source: Model | Graph;
  /** @internal */
  private readonly options: { prefix?: string };

  /** `source` is a model, or a graph with its nested subgraphs (a graph tree that belongs to no model). */
  constructor(source: Model | Graph, options: { prefix?: string } = {}) {
    super();
    this.source = source;
    this.options = options;
    this.index(options.prefix);
    if (options.prefix === undefined) this.fullyIndexed = true;
  }

  /** @internal */
  private index(prefix: string | undefined): void {
    const keep = (name: string) => prefix === undefined || name.startsWith(prefix);
    const add = (name: string) => { if (keep(name)) this.add(name); };
    const isModel = 'allGraphs' in this.source;
    for (const graph of isModel ? (this.source as Model).allGraphs() : walkGraphs(this.source as Graph)) {
      for (const v of [...graph.inputs, ...graph.outputs, ...graph.valueInfo, ...graph.initializers, ...graph.sparseInitializers]) add(v.name);
      graph._forEachName(prefix, (name) => this.add(name));
    }
    if (isModel) for (const fn of (this.source as Model).functions) add(fn.name);
  }

  /** @internal */
  private ensureIndexed(name: string): void {
    if (this.fullyIndexed || name.startsWith(this.options.prefix!)) return;
    this.index(undefined);
    this.fullyIndexed = true;
  }

  override fresh(base: string): string { this.ensureIndexed(base); return super.fresh(base); }
  override claim(name: string): string { this.ensureIndexed(name); return super.claim(name); }
  override has(name: string): boolean { this.ensureIndexed(name); return super.has(name); }
}
