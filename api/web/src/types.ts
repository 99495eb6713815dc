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
  // Lexical-first ingest: "lexical", "partial n/m" or "complete" (records from before: absent).
  index_state?: string;
  // The chunker version that made its chunks (`GET /api/repos` says this RepoLens's: another is outdated).
  chunker_version?: number;
}

// The event frames: one interface per model of rag/events.py (tests/test_events.py checks the fields).

export interface Source {
  path: string;
  start_line: number;
  end_line: number;
  symbol?: string | null;
  language?: string | null;
  score?: number | null;
  url?: string | null;
}

export interface Citation {
  path: string;
  start_line: number;
  end_line: number;
  url?: string | null;
  in_context: boolean;
}

export interface StatusEvent {
  type: "status";
  stage: string;
  message?: string | null;
  step?: string | null;
  files_done?: number | null;
  files_total?: number | null;
  chunks_done?: number | null;
  chunks_total?: number | null;
  rate?: number | null;
  eta_s?: number | null;
  provider?: string | null;
  model?: string | null;
  index_state?: string | null;
}

export interface SourcesEvent {
  type: "sources";
  sources: Source[];
}

export interface TokenEvent {
  type: "token";
  text: string;
}

export interface CitationsEvent {
  type: "citations";
  citations: Citation[];
}

export interface ResearchEvent {
  type: "research";
  iteration: number;
  max_iterations: number;
  phase: string;
  event: string;
  summary?: string;
  tool?: string | null;
  args?: Record<string, unknown> | null;
  files?: string[] | null;
}

export interface ErrorEvent {
  type: "error";
  code: string;
  message: string;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

export interface DoneEvent {
  type: "done";
  usage?: Usage | null;
  timings?: Record<string, number | null> | null;
  provider?: string | null;
  model?: string | null;
  context?: Record<string, number> | null;
  research?: Record<string, unknown> | null;
  repo?: Record<string, unknown> | null;
  report?: Record<string, unknown> | null;
  wiki?: Record<string, unknown> | null;
}

export interface PongEvent {
  type: "pong";
}

export interface WikiEvent {
  type: "wiki";
  event: "structure" | "page" | "note";
  title?: string | null;
  total?: number | null;
  mode?: string | null;
  pages?: Record<string, string>[] | null;
  index?: number | null;
  page_id?: string | null;
  reused?: boolean | null;
  reason?: string | null;
  message?: string | null;
}

export type ChatEvent =
  | StatusEvent
  | SourcesEvent
  | TokenEvent
  | CitationsEvent
  | ResearchEvent
  | WikiEvent
  | ErrorEvent
  | DoneEvent
  | PongEvent;

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

export interface WikiPage {
  id: string;
  title: string;
  content: string;
  description?: string;
  filePaths: string[];
  importance: "high" | "medium" | "low";
  relatedPages: string[];
  citations: Citation[];
}

export interface WikiSection {
  id: string;
  title: string;
  pages: string[];
}

/** One entry of `GET /api/repos/{id}/wikis`. */
export interface WikiSummary {
  language: string;
  comprehensive: boolean;
  mode: Wiki["mode"];
  generated_at: string;
  pages: number;
}

export interface Wiki {
  repo_id: string;
  commit: string | null;
  language: string;
  mode: "offline" | "llm" | "client";
  provider: string | null;
  model: string | null;
  generated_at: string;
  complete: boolean;
  structure: { title: string; description: string; pages: WikiPage[]; sections?: WikiSection[] | null };
  pages: Record<string, WikiPage>;
  stale_pages: string[];
  stale_reasons?: Record<string, string>; // page id -> why the next generation writes it again
}
