/** Messages between the page (app.ts) and its worker (worker.ts). */
import type { ErrorCode } from '../src/graph/errors.js';
import type { NeftuneOptions } from '../src/passes/index.js';
import type { VerifyReport } from '../src/verify/index.js';
import type { StepEvent } from '../src/training/trainer.js';
import type { TrainSettings } from './train-settings.js';

/** An error as the worker saw it: the library's code and message parts (option mentions kept apart), or an unexpected failure. */
export interface WorkerError {
  code: ErrorCode | 'UNEXPECTED';
  /** Text and option mentions ({ option }), so the page can name its own fields. */
  parts: Array<string | { option: string }>;
  /** What the worker was doing: opening, patching, verifying, stripping. */
  step: string;
  /** The line of a data file the problem is on. */
  line?: number;
}

export interface CandidateRow {
  node: string;
  graphPath: string[];
  kind: string;
  table: string;
  shape: string;
  dtype: string;
  storage: string;
  indices: string;
  role: string;
  reasons: string;
  patchable: boolean;
  defaultTarget: boolean;
}

export interface DataFileRow { location: string; tensors: number; present: boolean; bytes: number | null }

export interface ModelSummary {
  name: string;
  bytes: number;
  irVersion: number;
  opsets: string;
  producer: string;
  nodes: number;
  inputs: string[];
  outputs: string[];
  patched: boolean;
  patchText: string | null;
  externalData: DataFileRow[];
  candidates: CandidateRow[];
  nearMisses: string[];
  targetReason: string;
  /** Names the options' list fields can offer (tables, nodes). */
  choices: { tables: string[]; nodes: string[] };
}

export type Request =
  | { type: 'open'; files: File[] }
  | { type: 'patch'; options: NeftuneOptions }
  | { type: 'strip' };

export type Reply =
  | { type: 'progress'; step: number; steps: number; text: string }
  | { type: 'opened'; summary: ModelSummary }
  | { type: 'patched'; model: Blob; warnings: string[]; sites: string[]; report: VerifyReport | null; verifyError: WorkerError | null; provider: string; verifiedWhole: boolean }
  | { type: 'stripped'; model: Blob; message: string }
  | { type: 'error'; error: WorkerError };

/** The Train tab and its worker (train-worker.ts). `data` null: the bundled tiny token data. */
export type TrainRequest =
  | { type: 'start'; settings: TrainSettings; data: File | null }
  | { type: 'stop' };

export type TrainReply =
  /** Posted again, with `note`, when the run moves to another provider before its first step. */
  | { type: 'started'; provider: string; rows: number; tokens: number; skipped: number; dataName: string; runs: string[]; note?: string }
  /** `run`: index into the started runs (the first is the one whose model is downloaded). */
  | { type: 'step'; run: number; event: StepEvent }
  | { type: 'trained'; model: Blob; csv: string; steps: number; stopped: boolean; provider: string; seconds: number }
  | { type: 'error'; error: WorkerError };
