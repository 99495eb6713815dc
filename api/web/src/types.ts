/** Shapes of the public API (docs/ARCHITECTURE.md "Typed events" and "HTTP"). */

export interface RepoRecord {
  id: string;
  url: string;
  platform: string;
  ref: string | null;
  commit: string | null;
  file_count: number;
  chunk_count: number;
  created_at: string;
  updated_at: string;
}

export interface Source {
  path: string;
  start_line: number;
  end_line: number;
  symbol?: string | null;
  language?: string | null;
  url?: string | null;
}

export interface Citation extends Source {
  in_context: boolean;
}

export interface StatusEvent {
  type: "status";
  stage: string;
  step?: string;
  message?: string;
  files_done?: number;
  files_total?: number;
  chunks_done?: number;
  chunks_total?: number;
  rate?: number;
  eta_s?: number | null;
}

export interface ResearchEvent {
  type: "research";
  iteration: number;
  max_iterations: number;
  phase: string;
  event: string;
  tool?: string;
  args?: Record<string, unknown>;
  summary?: string;
  files?: string[];
}

export interface ErrorEvent {
  type: "error";
  code: string;
  message: string;
}

export type ChatEvent =
  | StatusEvent
  | ResearchEvent
  | ErrorEvent
  | { type: "sources"; sources: Source[] }
  | { type: "token"; text: string }
  | { type: "citations"; citations: Citation[] }
  | { type: "done"; timings?: Record<string, number> }
  | { type: "pong" };

export interface ModelInfo {
  id: string;
  name: string;
}

export interface ProviderInfo {
  id: string;
  name: string;
  configured: boolean;
  default: boolean;
  default_model: string;
  models: ModelInfo[];
}

export interface FilterDefaults {
  excluded_dirs: string[];
  excluded_files: string[];
}
