/** The flags of `neftune step`, apart from the command itself (so the CLI can list them without loading the training code). */
import type { OptionSchema } from '../src/passes/index.js';

/** What the flags ask for; everything but `output` goes to the library as given. */
export interface StepFlags {
  output?: string;
  loss?: string;
  params?: string[];
  optimizer?: 'sgd' | 'adamw';
  momentum?: number;
  weightDecay?: number;
  gradients?: boolean;
  paddingIdx?: string[];
  ignoreIndex?: number;
  json?: boolean;
}

export const STEP_OPTIONS: OptionSchema<StepFlags> = {
  output: { type: 'string', flag: 'output', placeholder: '<file|->', description: 'The step graph\'s file; - for stdout' },
  // A plain string, not a choice: the library knows its loss forms and says what is wrong.
  loss: { type: 'string', flag: 'loss', placeholder: 'auto|causal-lm|labels:NAME|output:NAME', default: 'auto', description: 'Loss: a scalar output of the model (auto, output:NAME), or appended: causal-LM cross-entropy (logits against shifted input_ids), cross-entropy against a labels input' },
  params: { type: 'strings', flag: 'params', placeholder: 'NAME', description: 'Train only these (repeatable); default every float initializer that reaches the loss, the rest stay frozen initializers' },
  optimizer: { type: 'choice', flag: 'optimizer', choices: ['sgd', 'adamw'], default: 'adamw', description: 'Update built into the graph (learning rate, and for AdamW the step number, are graph inputs)' },
  momentum: { type: 'number', flag: 'momentum', default: 0, description: 'SGD momentum (0: no state)' },
  weightDecay: { type: 'number', flag: 'weight-decay', defaultText: '0 for sgd, 0.01 for adamw', description: 'SGD: L2 added to the gradient; AdamW: decoupled decay' },
  gradients: { type: 'boolean', flag: 'gradients', description: 'Also output each parameter\'s gradient as <name>.grad' },
  paddingIdx: { type: 'strings', flag: 'padding-idx', placeholder: 'ROW|TABLE=ROW', description: 'Rows whose lookups get no gradient, as nn.Embedding(padding_idx) does (repeatable); a bare ROW is for the token-embedding table' },
  ignoreIndex: { type: 'number', flag: 'ignore-index', default: -100, description: 'Label value left out of labels / causal-lm:NAME losses', check: (n) => (Number.isInteger(n) ? undefined : 'be an integer') },
  json: { type: 'boolean', flag: 'json', description: 'Print one JSON object (shape in the README)' },
};
