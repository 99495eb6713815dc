/**
 * The conversation: one events-mode socket for every question, streamed markdown, citation
 * chips that open the source viewer, deep-research progress, stop, and per-repository history
 * kept in localStorage.
 */
import { copyText, formatLines, h, hostUrl, repoName } from "./dom";
import { renderMarkdown } from "./markdown";
import { ChatSocket, type SocketState } from "./socket";
import { loadConversation, loadPreferences, saveConversation, savePreferences, type Turn } from "./store";
import type { ChatEvent, Citation, ProviderInfo, RepoRecord, ResearchEvent, Source, StatusEvent } from "./types";
import { accessRefused, tokenFor } from "./tokens";
import { openSource } from "./viewer";

const SUGGESTIONS = [
  "How is this project structured?",
  "Where does the program start, and what happens next?",
  "Draw a Mermaid diagram of the main components.",
];

/** The assistant turn being streamed and the DOM that shows it. */
interface Live {
  turn: Turn;
  view: TurnView;
}

export interface ChatOptions {
  providers: ProviderInfo[];
  defaultProvider: string;
  languages: Record<string, string>;
  defaultLanguage: string;
}

export class ChatView {
  readonly element: HTMLElement;
  private repo: RepoRecord | null = null;
  private turns: Turn[] = [];
  private live: Live | null = null;
  private readonly socket: ChatSocket;
  private readonly log = h("div", { class: "conversation", "aria-live": "polite" });
  private readonly title = h("h2", { class: "chat-title" }, "No repository selected");
  private readonly banner = h("div", { class: "banner", hidden: true, role: "status" });
  private readonly input = h("textarea", {
    class: "composer-input",
    rows: 2,
    placeholder: "Ask about the code…  (Enter sends, Shift+Enter adds a line, Esc stops)",
    "aria-label": "Question",
  });
  private readonly send = h("button", { type: "submit", class: "button primary send" }, "Send");
  private readonly stop = h("button", { type: "button", class: "button danger stop", hidden: true }, "Stop");
  private readonly clear = h("button", { type: "button", class: "button small", title: "Forget this conversation" }, "Clear");
  private readonly provider = h("select", { name: "provider", "aria-label": "Provider" });
  private readonly model = h("select", { name: "model", "aria-label": "Model" });
  private readonly language = h("select", { name: "language", "aria-label": "Answer language" });
  private readonly deep = h("input", { type: "checkbox", name: "deep_research" });

  constructor(private readonly options: ChatOptions) {
    this.socket = new ChatSocket({
      onEvent: (event) => this.onEvent(event),
      onState: (state, retryInMs) => this.onSocketState(state, retryInMs),
      onLost: () => this.onLost(),
    });
    this.fillPickers();
    const form = h(
      "form",
      { class: "composer" },
      this.input,
      h(
        "div",
        { class: "composer-bar" },
        h("label", { class: "check", title: "Plan, investigate with tools over several iterations, then conclude" }, this.deep, " Deep research"),
        this.provider,
        this.model,
        this.language,
        h("span", { class: "spacer" }),
        this.stop,
        this.send,
      ),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.ask(this.input.value);
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.ask(this.input.value);
      }
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.live && !document.querySelector("dialog[open]")) this.cancel();
    });
    this.stop.addEventListener("click", () => this.cancel());
    this.clear.addEventListener("click", () => this.clearConversation());
    this.element = h(
      "section",
      { class: "chat" },
      h("div", { class: "chat-head" }, this.title, this.clear),
      this.banner,
      this.log,
      form,
    );
    this.socket.connect();
    this.render();
  }

  get repoId(): string | null {
    return this.repo?.id ?? null;
  }

  select(repo: RepoRecord | null): void {
    if (this.live) this.cancel();
    this.repo = repo;
    this.turns = repo ? loadConversation(repo.id) : [];
    savePreferences({ repoId: repo?.id });
    this.render();
    if (repo) this.input.focus();
  }

  forget(repoId: string): void {
    saveConversation(repoId, []);
    if (this.repo?.id === repoId) this.select(null);
  }

  private fillPickers(): void {
    const preferences = loadPreferences();
    const providers = [...this.options.providers].sort((a, b) => Number(b.configured) - Number(a.configured));
    this.provider.replaceChildren(
      ...providers.map((item) => h("option", { value: item.id }, item.configured ? item.name : `${item.name} (not configured)`)),
    );
    const known = (id?: string) => providers.some((item) => item.id === id);
    this.provider.value = known(preferences.provider) ? preferences.provider! : this.options.defaultProvider;
    this.fillModels(preferences.model);
    this.language.replaceChildren(
      ...Object.entries(this.options.languages).map(([code, name]) => h("option", { value: code }, name)),
    );
    this.language.value = preferences.language && preferences.language in this.options.languages ? preferences.language : this.options.defaultLanguage;
    this.deep.checked = preferences.deepResearch ?? false;
    this.provider.addEventListener("change", () => {
      this.fillModels();
      savePreferences({ provider: this.provider.value, model: this.model.value });
    });
    this.model.addEventListener("change", () => savePreferences({ model: this.model.value }));
    this.language.addEventListener("change", () => savePreferences({ language: this.language.value }));
    this.deep.addEventListener("change", () => savePreferences({ deepResearch: this.deep.checked }));
  }

  private fillModels(preferred?: string): void {
    const provider = this.options.providers.find((item) => item.id === this.provider.value);
    const models = provider?.models ?? [];
    const ids = models.map((model) => model.id);
    const options = models.map((model) => h("option", { value: model.id }, model.name || model.id));
    if (provider && !ids.includes(provider.default_model)) options.unshift(h("option", { value: provider.default_model }, provider.default_model));
    this.model.replaceChildren(...options);
    this.model.hidden = options.length === 0;
    const wanted = preferred && [...this.model.options].some((option) => option.value === preferred) ? preferred : provider?.default_model;
    if (wanted) this.model.value = wanted;
  }

  private render(): void {
    this.title.textContent = this.repo ? repoName(this.repo) : "No repository selected";
    this.title.title = this.repo?.id ?? "";
    this.clear.hidden = this.turns.length === 0;
    this.input.disabled = !this.repo;
    this.send.disabled = !this.repo || this.live !== null;
    if (!this.repo) {
      this.log.replaceChildren(
        h("div", { class: "empty" }, h("h3", {}, "Ask questions about any repository"), h("p", {}, "Paste a GitHub, GitLab or Bitbucket URL, or a local folder, in the Repositories panel and press Index repository — or pick one you indexed before.")),
      );
      return;
    }
    if (this.turns.length === 0) {
      const chips = SUGGESTIONS.map((text) => h("button", { type: "button", class: "suggestion", onclick: () => this.ask(text) }, text));
      this.log.replaceChildren(h("div", { class: "empty" }, h("h3", {}, `Ask about ${repoName(this.repo)}`), h("div", { class: "suggestions" }, ...chips)));
      return;
    }
    this.log.replaceChildren(...this.turns.map((turn) => new TurnView(turn, this.repo!.id, false).element));
    this.scrollToEnd(true);
  }

  private ask(text: string): void {
    const question = text.trim();
    if (!question || !this.repo || this.live) return;
    const messages = [...this.turns, { role: "user" as const, content: question }]
      .filter((turn) => turn.content)
      .map((turn) => ({ role: turn.role, content: turn.content }));
    const sent = this.socket.send({
      protocol: "events",
      repo_url: this.repo.url,
      type: this.repo.platform,
      ref: this.repo.ref ?? undefined,
      messages,
      provider: this.provider.value || undefined,
      model: this.model.value || undefined,
      language: this.language.value,
      deep_research: this.deep.checked,
      token: tokenFor(this.repo.id),
    });
    if (!sent) {
      this.showBanner("error", "Not connected to the server yet — your question is kept; try again in a moment.");
      return;
    }
    this.input.value = "";
    if (this.turns.length === 0) this.log.replaceChildren();
    const user: Turn = { role: "user", content: question };
    const answer: Turn = { role: "assistant", content: "", research: [] };
    this.turns.push(user, answer);
    this.log.append(new TurnView(user, this.repo.id, false).element);
    const view = new TurnView(answer, this.repo.id, true);
    this.log.append(view.element);
    this.live = { turn: answer, view };
    this.setStreaming(true);
    this.scrollToEnd(true);
  }

  private cancel(): void {
    if (!this.live) return;
    if (!this.socket.send({ type: "cancel" })) this.finish("stopped");
    this.live.view.setStatus("Stopping…");
  }

  private onEvent(event: ChatEvent): void {
    const live = this.live;
    if (event.type === "pong" || !live) {
      if (event.type === "error") this.showBanner("error", event.message);
      if (event.type === "error" && event.code === "auth_failed" && this.repo) accessRefused(this.repo.id, event.message);
      return;
    }
    const { turn, view } = live;
    switch (event.type) {
      case "status": {
        const note = answerNote(event);
        if (note && !turn.notes?.includes(note)) {
          turn.notes = [...(turn.notes ?? []), note];
          view.update();
        }
        view.setStatus(event.message || `${event.stage}…`);
        break;
      }
      case "sources":
        turn.sources = event.sources;
        view.update();
        break;
      case "token":
        turn.content += event.text;
        view.scheduleUpdate();
        break;
      case "citations":
        turn.citations = event.citations;
        view.update();
        break;
      case "research":
        turn.research!.push(event);
        view.update();
        break;
      case "error":
        if (event.code === "cancelled") turn.stopped = true;
        else turn.error = `${event.message} (${event.code})`;
        if (event.code === "auth_failed" && this.repo) accessRefused(this.repo.id, event.message);
        view.update();
        break;
      case "done":
        this.finish(turn.error ? "error" : turn.stopped ? "stopped" : "done");
        break;
    }
    this.scrollToEnd(false);
  }

  private finish(state: "done" | "stopped" | "error"): void {
    const live = this.live;
    if (!live) return;
    if (state === "stopped") live.turn.stopped = true;
    this.live = null;
    live.view.finish(state);
    this.setStreaming(false);
    if (this.repo) saveConversation(this.repo.id, this.turns);
    this.clear.hidden = false;
  }

  private onLost(): void {
    if (!this.live) return;
    this.live.turn.error = "The connection was lost while answering; the answer may be incomplete.";
    this.finish("error");
  }

  private onSocketState(state: SocketState, retryInMs?: number): void {
    document.body.dataset.socket = state;
    if (state === "open") {
      if (!this.banner.hidden && this.banner.dataset.kind === "offline") {
        this.showBanner("ok", "Reconnected to the server.");
        setTimeout(() => this.banner.dataset.kind === "ok" && (this.banner.hidden = true), 2500);
      }
    } else if (state === "reconnecting") {
      const retry = h("button", { type: "button", class: "button small", onclick: () => this.socket.reconnectNow() }, "Retry now");
      this.showBanner("offline", `Connection to the server lost — reconnecting in ${Math.round((retryInMs ?? 0) / 100) / 10} s…`, retry);
    }
  }

  private showBanner(kind: "ok" | "offline" | "error", text: string, action?: HTMLElement): void {
    this.banner.hidden = false;
    this.banner.dataset.kind = kind;
    this.banner.replaceChildren(h("span", {}, text), ...(action ? [action] : []));
  }

  private setStreaming(on: boolean): void {
    this.stop.hidden = !on;
    this.send.hidden = on;
    this.send.disabled = on || !this.repo;
    this.element.dataset.streaming = String(on);
  }

  private scrollToEnd(force: boolean): void {
    const nearBottom = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 120;
    if (force || nearBottom) this.log.scrollTop = this.log.scrollHeight;
  }

  private clearConversation(): void {
    if (this.live) this.cancel();
    this.turns = [];
    if (this.repo) saveConversation(this.repo.id, []);
    this.render();
  }
}

/** One turn on screen; an assistant turn re-renders as its events arrive. */
class TurnView {
  readonly element: HTMLElement;
  private readonly body = h("div", { class: "markdown" });
  private readonly status = h("p", { class: "turn-status muted small" });
  private readonly notes = h("div", { class: "turn-notes" });
  private readonly extras = h("div", { class: "turn-extras" });
  private frame = 0;

  constructor(
    private readonly turn: Turn,
    private readonly repoId: string,
    live: boolean,
  ) {
    this.element = h("article", { class: `turn ${turn.role}`, "data-state": live ? "streaming" : "done" });
    if (turn.role === "user") {
      this.body.textContent = turn.content;
      this.element.append(this.body);
      return;
    }
    this.element.append(this.status, this.notes, h("div", { class: "research-slot" }), this.body, this.extras);
    if (live) this.setStatus("Retrieving…");
    this.update(!live);
  }

  setStatus(text: string): void {
    this.status.textContent = text;
    this.status.hidden = !text;
  }

  /** Coalesce token bursts into one render per frame. */
  scheduleUpdate(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.update();
    });
  }

  update(final = false): void {
    if (this.turn.content) this.setStatus("");
    this.notes.replaceChildren(...(this.turn.notes ?? []).map((note) => h("p", { class: "turn-note small", role: "note" }, note)));
    renderMarkdown(this.body, this.turn.content, final);
    if (this.turn.citations?.length) linkCitations(this.body, this.turn.citations, (item) => void openSource(this.repoId, item));
    const research = renderResearch(this.turn.research ?? [], final);
    if (typeof research !== "string") linkResearchSteps(research, (span) => void openSource(this.repoId, span));
    this.element.querySelector(".research-slot")!.replaceChildren(research);
    this.extras.replaceChildren(...this.renderExtras(final));
  }

  finish(state: "done" | "stopped" | "error"): void {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.setStatus("");
    this.update(true);
    this.element.dataset.state = state;
  }

  private renderExtras(final: boolean): HTMLElement[] {
    const parts: HTMLElement[] = [];
    const { turn } = this;
    if (turn.stopped) parts.push(h("p", { class: "muted small stopped-note" }, "Stopped."));
    if (turn.error) parts.push(h("p", { class: "error", role: "alert" }, turn.error));
    if (turn.citations?.length) {
      parts.push(h("div", { class: "chips citations", "aria-label": "Citations" }, ...turn.citations.map((item) => this.chip(item))));
    }
    if (turn.sources?.length) {
      parts.push(
        h(
          "details",
          { class: "sources" },
          h("summary", {}, `${turn.sources.length} retrieved sources`),
          h("div", { class: "chips" }, ...turn.sources.map((item) => this.chip(item))),
        ),
      );
    }
    if (final && turn.content) {
      const copy = h("button", { type: "button", class: "button small", title: "Copy the answer as markdown" }, "Copy answer");
      copy.addEventListener("click", () => copyText(turn.content, copy));
      parts.push(h("div", { class: "row actions" }, copy));
    }
    return parts;
  }

  private chip(source: Source | Citation): HTMLElement {
    const unverified = "in_context" in source && !source.in_context;
    const label = `${source.path}:${formatLines(source)}`;
    const open = h(
      "button",
      {
        type: "button",
        class: unverified ? "chip unverified" : "chip",
        title: unverified ? "This citation was not among the retrieved sources: check it" : `Show ${label}`,
      },
      unverified ? h("span", { class: "warn", "aria-label": "not in context" }, "⚠") : null,
      label,
    );
    open.addEventListener("click", () => void openSource(this.repoId, source));
    const url = hostUrl(source.url);
    const link = url
      ? h("a", { class: "chip-link", href: url, target: "_blank", rel: "noopener noreferrer", title: "Open at the source", "aria-label": `Open ${label} at the source` }, "↗")
      : null;
    return h("span", { class: "chip-group" }, open, link);
  }
}

// The citation forms rag/citations.py recognises (`path:10-20`, `path:10`, `path:L10-L20`, `path#L10-L20`,
// en dashes, a shortened path), so every citation the server reports links, however the answer wrote it.
const SEGMENT = String.raw`(?:[\w.\-@+~]|\[\[?[\w.\-]+\]?\]|\([\w.\-]+\))+`;
const CITATION = new RegExp(
  String.raw`(?<![\w/.\-@+~])((?:${SEGMENT}/)*${SEGMENT})(?::L?(\d+)(?:\s?[-–]\s?L?(\d+))?|#L(\d+)(?:-L?(\d+))?)(?!\w)`,
  "g",
);

/** The path and lines a `CITATION` match wrote. */
function spanOf(match: RegExpExecArray): Citation {
  const first = Number(match[2] ?? match[4]);
  const last = Number(match[3] ?? match[5] ?? first);
  return { path: match[1].replace(/^\.\//, ""), start_line: Math.min(first, last), end_line: Math.max(first, last), in_context: true };
}

/** The reported citation a written `path:lines` means: the same lines of the same path, or of the one
 * cited path ending in `/path` (the server completes a path the model shortened). */
function citationFor(match: RegExpExecArray, citations: Citation[]): Citation | undefined {
  const { path, start_line: start, end_line: end } = spanOf(match);
  const same = citations.filter((item) => item.start_line === start && item.end_line === end);
  const suffixed = same.filter((item) => item.path.endsWith(`/${path}`));
  const onePath = new Set(suffixed.map((item) => item.path)).size === 1;
  return same.find((item) => item.path === path) ?? (onePath ? suffixed[0] : undefined);
}

/** Make each `path:lines` the server recognised as a citation in the answer text open the viewer. */
export function linkCitations(root: HTMLElement, citations: Citation[], open: (citation: Citation) => void): void {
  linkSpans(root, (match) => citationFor(match, citations), open);
}

/** A research step's `path:lines` as a span to show: a file name has a letter, and a path a folder or an
 * extension (as rag/citations.py reads them), so `step:2` or `10:30` stay text. */
function stepSpan(match: RegExpExecArray): Citation | undefined {
  const span = spanOf(match);
  const name = span.path.split("/").pop() ?? "";
  const pathLike = /[A-Za-z]/.test(name) && (span.path.includes("/") || /\.[A-Za-z0-9]+$/.test(name));
  return pathLike && span.start_line > 0 ? span : undefined;
}

/** Research steps name the spans the tools showed (`plan … from lib/response.js:780-868`): each opens the
 * viewer like the answer's citations do (the server checks the path; one not indexed says so there). */
function linkResearchSteps(root: HTMLElement, open: (span: Citation) => void): void {
  linkSpans(root, stepSpan, open);
}

/** Every `path:lines` in `root`'s text (code blocks aside) that `resolve` knows becomes a button that opens it. */
function linkSpans(root: HTMLElement, resolve: (match: RegExpExecArray) => Citation | undefined, open: (citation: Citation) => void): void {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const nodes: Text[] = [];
  while (walker.nextNode()) if (!walker.currentNode.parentElement?.closest("pre")) nodes.push(walker.currentNode as Text);
  for (const node of nodes) {
    const parts: (string | HTMLElement)[] = [];
    let done = 0;
    for (const match of node.data.matchAll(CITATION)) {
      const citation = resolve(match);
      if (!citation) continue;
      const text = match[0];
      const warn = citation.in_context ? "" : " (not in the retrieved context)";
      parts.push(node.data.slice(done, match.index));
      parts.push(h("button", { type: "button", class: citation.in_context ? "cite" : "cite unverified", title: `Show ${text}${warn}`, onclick: () => open(citation) }, text));
      done = match.index + text.length;
    }
    if (parts.length) node.replaceWith(...parts, node.data.slice(done));
  }
}

/**
 * The text of a status frame that describes the answer itself, not a step on the way to it: the answer
 * is made without the code graph (still being built: `graph_building` at stage `retrieving`), offline
 * because the provider picked is not configured (`offline_fallback`: what to set), or from an index whose
 * embedding goes on (`index_state`). The next status replaces a step's line; these stay
 * with the answer. An index nothing finishes (`index_unfinished`) says so in the answer's own text.
 */
function answerNote(event: StatusEvent): string | null {
  if (event.stage !== "retrieving" || !event.message || event.step === "index_unfinished") return null;
  const kept = event.step === "graph_building" || event.step === "offline_fallback" || event.index_state;
  return kept ? event.message : null;
}

function renderResearch(events: ResearchEvent[], final: boolean): HTMLElement | string {
  if (events.length === 0) return "";
  const byIteration = new Map<number, ResearchEvent[]>();
  for (const event of events) byIteration.set(event.iteration, [...(byIteration.get(event.iteration) ?? []), event]);
  const last = events[events.length - 1];
  const steps = [...byIteration.entries()].map(([iteration, items]) =>
    h(
      "li",
      { class: "iteration", "data-iteration": iteration },
      h("strong", {}, iteration === 0 ? "Plan" : `Iteration ${iteration}/${items[0].max_iterations} · ${items[items.length - 1].phase}`),
      h("ul", {}, ...items.map(renderResearchEvent)),
    ),
  );
  const summary = final ? `Deep research: ${byIteration.size} steps` : `Researching — ${last.phase} (iteration ${last.iteration}/${last.max_iterations})`;
  return h("details", { class: "research", open: !final }, h("summary", {}, summary), h("ol", {}, ...steps));
}

function renderResearchEvent(event: ResearchEvent): HTMLElement {
  const args = event.args ? Object.entries(event.args).map(([key, value]) => `${key}=${JSON.stringify(value)}`).join(" ") : "";
  const head = event.tool ? `${event.tool}(${args})` : event.event;
  return h(
    "li",
    { class: `research-event ${event.event}` },
    h("code", {}, head),
    event.summary ? ` ${event.summary}` : "",
    event.files?.length ? h("div", { class: "muted small" }, event.files.join(", ")) : null,
  );
}
