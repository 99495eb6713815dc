/**
 * What the page keeps across reloads: conversations (per repository) and picker choices.
 * Access tokens are deliberately absent: they live only in page memory (see repos.ts).
 */
import type { Citation, ResearchEvent, Source } from "./types";

export interface Turn {
  role: "user" | "assistant";
  content: string;
  sources?: Source[];
  citations?: Citation[];
  research?: ResearchEvent[];
  error?: string;
  stopped?: boolean;
  // Status frames about the answer itself (made without the code graph, from an index being embedded).
  notes?: string[];
}

const CONVERSATIONS = "repolens.conversations.v1";
const PREFERENCES = "repolens.preferences.v1";

function read<T>(key: string, fallback: T): T {
  try {
    return (JSON.parse(localStorage.getItem(key) ?? "null") as T) ?? fallback;
  } catch {
    return fallback;
  }
}

export function loadConversation(repoId: string): Turn[] {
  return read<Record<string, Turn[]>>(CONVERSATIONS, {})[repoId] ?? [];
}

export function saveConversation(repoId: string, turns: Turn[]): void {
  const all = read<Record<string, Turn[]>>(CONVERSATIONS, {});
  if (turns.length) all[repoId] = turns;
  else delete all[repoId];
  localStorage.setItem(CONVERSATIONS, JSON.stringify(all));
}

export interface Preferences {
  provider?: string;
  model?: string;
  language?: string;
  repoId?: string;
  deepResearch?: boolean;
}

export function loadPreferences(): Preferences {
  return read<Preferences>(PREFERENCES, {});
}

export function savePreferences(change: Partial<Preferences>): void {
  localStorage.setItem(PREFERENCES, JSON.stringify({ ...loadPreferences(), ...change }));
}
