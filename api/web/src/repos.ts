/**
 * The repository panel: index a URL or local path (live progress from the server's SSE),
 * and list indexed repositories with update and delete.
 *
 * The access token is read from its password field when a request is sent and kept only in
 * page memory (`tokens.ts`, by repository id, reused by Update, the chat and the source
 * viewer): never in storage, never in a URL, never shown again. When the server refuses a
 * private repository's content, the panel shows why and focuses the token field; indexing the
 * repository again with the token (nothing is re-embedded if it did not change) remembers it.
 */
import { getJson, postEvents, repoPath } from "./api";
import { h, repoName } from "./dom";
import { onAccessRefused, rememberToken, tokenFor } from "./tokens";
import type { FilterDefaults, RepoRecord, StatusEvent } from "./types";

const SEARCHABLE_NOTE = "Searchable now: ask while the embedding goes on (keyword search first; answers improve as vectors land).";

/** A record's `index_state` in a repository row: `lexical` / `partial n/m` / `complete`. */
function indexStateText(state: string): string {
  if (state === "lexical") return "keyword search only (not embedded yet)";
  const partial = /^partial (\d+)\/(\d+)$/.exec(state);
  return partial ? `embedded ${partial[1]}/${partial[2]} chunks` : state;
}

export interface RepoPanelHooks {
  onSelect(repo: RepoRecord): void;
  onDeleted(repoId: string): void;
  selected(): string | null;
}

export class RepoPanel {
  readonly element: HTMLElement;
  private readonly list = h("ul", { class: "repo-list", "aria-label": "Indexed repositories" });
  private readonly progress = h("div", { class: "progress", hidden: true, role: "status", "aria-live": "polite" });
  private readonly location = h("input", {
    name: "repo_url",
    type: "text",
    placeholder: "https://github.com/owner/repo or /path/to/folder",
    autocomplete: "off",
    spellcheck: false,
    required: true,
  });
  private readonly platform = h(
    "select",
    { name: "type", "aria-label": "Platform" },
    ...["auto", "github", "gitlab", "bitbucket", "git", "local"].map((value) =>
      h("option", { value }, value === "auto" ? "Platform: auto" : value), // the box says what it is: messages name it
    ),
  );
  private readonly token = h("input", {
    name: "token",
    type: "password",
    placeholder: "Access token (if private)",
    autocomplete: "off",
  });
  private readonly filters = {
    excluded_dirs: h("textarea", { name: "excluded_dirs", rows: 2, placeholder: "extra folders to skip, one per line" }),
    excluded_files: h("textarea", { name: "excluded_files", rows: 2, placeholder: "extra file patterns to skip" }),
    included_dirs: h("textarea", { name: "included_dirs", rows: 2, placeholder: "only these folders (optional)" }),
    included_files: h("textarea", { name: "included_files", rows: 2, placeholder: "only these file patterns (optional)" }),
  };
  private readonly useDefaults = h("input", { type: "checkbox", name: "use_default_excludes", checked: true });
  private readonly defaultsView = h("p", { class: "muted small defaults" }, "Loading the default exclusions…");
  private readonly submit = h("button", { type: "submit", class: "button primary" }, "Index repository");
  private readonly cancel = h("button", { type: "button", class: "button", hidden: true }, "Cancel");
  private running: AbortController | null = null;
  private searchable = false; // the running ingest passed its first milestone: questions work from here on
  // The repository the running ingest or update is indexing: while it runs, the progress above is its one
  // count (its row's count of committed vectors lags the live one, and two numbers disagreed).
  private indexing: string | null = null;
  private lastStatus: [string, string | undefined] = ["", undefined]; // what the progress says now
  private armedDelete: string | null = null; // the repository whose Delete was clicked once
  private disarm = 0; // the timer that un-arms it
  private repos: RepoRecord[] = [];
  private chunkerVersion: number | null = null; // the one this RepoLens chunks with (`GET /api/repos`)

  constructor(private readonly hooks: RepoPanelHooks) {
    onAccessRefused((repoId, message) => this.askForToken(repoId, message));
    const form = h(
      "form",
      { class: "index-form", "aria-label": "Index a repository" },
      h("label", {}, h("span", {}, "Repository"), this.location),
      h("div", { class: "fields" }, this.platform, this.token),
      h(
        "details",
        { class: "filters" },
        h("summary", {}, "Filters"),
        h("label", { class: "check" }, this.useDefaults, " Apply the default exclusions"),
        this.defaultsView,
        ...Object.values(this.filters),
      ),
      h("div", { class: "row" }, this.submit, this.cancel),
      this.progress,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.index();
    });
    this.cancel.addEventListener("click", () => this.running?.abort());
    this.element = h("section", { class: "panel repos" }, h("h2", {}, "Repositories"), form, h("h3", {}, "Indexed"), this.list);
  }

  async load(): Promise<RepoRecord[]> {
    const [{ repos, chunker_version }] = await Promise.all([
      getJson<{ repos: RepoRecord[]; chunker_version?: number }>("/api/repos"),
      this.loadDefaults(),
    ]);
    this.repos = repos;
    this.chunkerVersion = chunker_version ?? null;
    this.renderList();
    return repos;
  }

  find(repoId: string | null): RepoRecord | undefined {
    return this.repos.find((repo) => repo.id === repoId);
  }

  private async loadDefaults(): Promise<void> {
    try {
      const defaults = await getJson<FilterDefaults>("/api/filters/defaults");
      this.defaultsView.replaceChildren(
        h("strong", {}, "Folders: "),
        defaults.excluded_dirs.join(" "),
        h("br"),
        h("strong", {}, "Files: "),
        defaults.excluded_files.join(" "),
      );
    } catch (error) {
      this.defaultsView.textContent = `Default exclusions unavailable: ${(error as Error).message}`;
    }
  }

  renderList(): void {
    const selected = this.hooks.selected();
    if (this.repos.length === 0) {
      this.list.replaceChildren(h("li", { class: "muted" }, "Nothing indexed yet."));
      return;
    }
    this.list.replaceChildren(...this.repos.map((repo) => this.renderRepo(repo, repo.id === selected)));
  }

  private renderRepo(repo: RepoRecord, selected: boolean): HTMLElement {
    const facts = [
      repo.commit ? `@${repo.commit.slice(0, 8)}` : null,
      `${repo.file_count} files`,
      `${repo.chunk_count} chunks`,
      repo.index_state && repo.index_state !== "complete"
        ? this.running && repo.id === this.indexing
          ? "embedding now (progress above)"
          : indexStateText(repo.index_state)
        : null,
      repo.updated_at ? `updated ${new Date(repo.updated_at).toLocaleString()}` : null,
    ].filter(Boolean);
    // Chunked by another RepoLens version: the row says so, and its Update button is the fix.
    const outdated = this.chunkerVersion !== null && (repo.chunker_version ?? 0) !== this.chunkerVersion;
    const stale = outdated
      ? h("span", { class: "small outdated", title: `chunker version ${repo.chunker_version ?? 0} -> ${this.chunkerVersion}` }, "chunked by an older RepoLens: Update re-chunks it")
      : null;
    const update = h("button", { type: "button", class: "button small", title: "Fetch new commits and re-index changed files" }, "Update");
    const armed = this.armedDelete === repo.id;
    const remove = h("button", { type: "button", class: "button small danger", title: "Delete this index" }, armed ? "Confirm delete" : "Delete");
    remove.dataset.armed = String(armed);
    update.addEventListener("click", () => void this.update(repo));
    remove.addEventListener("click", () => void this.remove(repo));
    const open = h("button", { type: "button", class: "repo-name", title: `Ask about ${repo.id}` }, repoName(repo));
    open.addEventListener("click", () => this.hooks.onSelect(repo));
    return h(
      "li",
      { class: selected ? "repo selected" : "repo", "data-repo-id": repo.id },
      open,
      repo.platform === "local" ? h("span", { class: "muted small path" }, repo.url) : null,
      h("span", { class: "muted small" }, facts.join(" · ")),
      stale,
      h("div", { class: "row" }, update, remove),
    );
  }

  private body(): Record<string, unknown> {
    const body: Record<string, unknown> = {
      repo_url: this.location.value.trim(),
      use_default_excludes: this.useDefaults.checked,
    };
    if (this.platform.value !== "auto") body.type = this.platform.value;
    for (const [name, field] of Object.entries(this.filters)) if (field.value.trim()) body[name] = field.value.trim();
    return body;
  }

  private takeToken(): string | null {
    // Read once, then clear the field: the value is never shown again.
    const value = this.token.value.trim();
    this.token.value = "";
    return value || null;
  }

  private async index(): Promise<void> {
    if (!this.location.value.trim()) return;
    const body = this.body();
    const token = this.takeToken();
    if (token) body.token = token;
    await this.run("/api/repos", body, "Indexing", token, null);
  }

  private async update(repo: RepoRecord): Promise<void> {
    const token = this.takeToken() ?? tokenFor(repo.id) ?? null;
    await this.run(`${repoPath(repo.id)}/update`, token ? { token } : {}, `Updating ${repo.id}`, token, repo.id);
  }

  /** A private repository's content was refused: say why, and prepare re-indexing it with a token. */
  private askForToken(repoId: string, message: string): void {
    const repo = this.find(repoId);
    if (repo) {
      this.location.value = repo.url;
      this.platform.value = repo.platform;
    }
    this.showProgress("error", `${message}. Enter the token and press “Index repository”.`);
    this.token.focus();
  }

  private async remove(repo: RepoRecord): Promise<void> {
    // Two clicks instead of `confirm()`: no modal, and still no accidental deletes. The armed state is the
    // list's (not the button's): a list reloaded meanwhile (a late progress frame) keeps "Confirm delete".
    window.clearTimeout(this.disarm);
    if (this.armedDelete !== repo.id) {
      this.armedDelete = repo.id;
      this.renderList();
      this.disarm = window.setTimeout(() => {
        this.armedDelete = null;
        this.renderList();
      }, 4000);
      return;
    }
    this.armedDelete = null;
    try {
      const token = tokenFor(repo.id);
      await getJson(repoPath(repo.id), { method: "DELETE", headers: token ? { "X-Repo-Token": token } : {} });
      this.repos = this.repos.filter((item) => item.id !== repo.id);
      this.hooks.onDeleted(repo.id);
      this.renderList();
    } catch (error) {
      this.showProgress("error", `Delete failed: ${(error as Error).message}`);
    }
  }

  /** `repoId`: the repository being indexed, when known before the server names it (an update). */
  private async run(url: string, body: unknown, label: string, token: string | null, repoId: string | null): Promise<void> {
    if (this.running) return;
    this.running = new AbortController();
    this.indexing = repoId;
    this.submit.disabled = true;
    this.cancel.hidden = false;
    this.showProgress("running", `${label}: starting…`);
    this.searchable = false;
    this.lastStatus = ["", undefined];
    let finished: RepoRecord | null = null;
    let ended = false; // a done or error frame came: else the stream broke off (a server gone)
    try {
      await postEvents(
        url,
        body,
        (event) => {
          if (event.type === "status") {
            const status = event as unknown as StatusEvent;
            this.showStatus(label, status);
            // Lexical first: the repository answers from here on, while embedding goes on.
            if (status.step === "searchable") void this.openSearchable();
          }
          else if (event.type === "error") {
            ended = true;
            this.showProgress("error", `${label} failed: ${event.message} (${event.code})`);
          } else if (event.type === "done") {
            ended = true;
            finished = event.repo as RepoRecord;
            if (token) rememberToken(finished.id, token);
            const report = event.report as {
              timings?: { total_s?: number };
              files?: { rechunked?: number; regraphed?: number };
              rechunk_reason?: string | null;
              graph_reason?: string | null;
            };
            const seconds = report.timings?.total_s;
            // What an upgrade of RepoLens made this run do to unchanged files (it is never "nothing").
            const rebuilt = [
              report.rechunk_reason ? `re-chunked ${report.files?.rechunked ?? 0} unchanged files (${report.rechunk_reason})` : "",
              report.graph_reason ? `code graph rebuilt for ${report.files?.regraphed ?? 0} unchanged files (${report.graph_reason})` : "",
            ].filter(Boolean);
            this.showProgress(
              "done",
              `Indexed ${repoName(finished)}: ${finished.file_count} files, ${finished.chunk_count} chunks` +
                (seconds !== undefined ? ` in ${seconds.toFixed(1)} s` : "") +
                rebuilt.map((said) => `; ${said}`).join("") +
                ". Ask a question in the chat.",
            );
          }
        },
        this.running.signal,
      );
      if (!ended) {
        // No done or error frame: the server went away. Keep how far it got, and say the rest is unknown.
        const [said, detail] = this.lastStatus;
        const ending = "the connection to the server ended before the ingest did (the list shows its state)";
        this.showProgress("error", `${said || label} · ${ending}`, undefined, detail);
      }
    } catch (error) {
      const aborted = (error as Error).name === "AbortError";
      this.showProgress("error", aborted ? `${label} cancelled; the previous index is unchanged.` : `${label} failed: ${(error as Error).message}`);
    } finally {
      this.running = null;
      this.indexing = null;
      this.submit.disabled = false;
      this.cancel.hidden = true;
    }
    if (finished) {
      await this.load();
      this.hooks.onSelect(finished);
    } else {
      // Its row says again how far the committed index got: the server's list, or the last one seen.
      await this.load().catch(() => this.renderList());
    }
  }

  /** At the searchable milestone: refresh the list and, if no repository is open, open this one (the
   * most recently updated record), so "Ask a question in the chat" is true while the embedding goes on. */
  private async openSearchable(): Promise<void> {
    const repos = await this.load();
    if (repos.length === 0) return;
    const newest = repos.reduce((a, b) => (b.updated_at > a.updated_at ? b : a));
    if (this.running && this.indexing === null) {
      this.indexing = newest.id;
      this.renderList();
    }
    if (this.hooks.selected() === null) this.hooks.onSelect(newest);
  }

  private showStatus(label: string, status: StatusEvent): void {
    if (status.step === "searchable") {
      this.searchable = true;
      const said = `${label}: searchable (${status.index_state ?? "lexical"}). Ask a question in the chat.`;
      this.showProgress("running", said, undefined, SEARCHABLE_NOTE);
      this.lastStatus = [said, SEARCHABLE_NOTE];
      return;
    }
    const parts = [`${label}: ${status.step ?? status.stage}`];
    if (status.index_state && !status.chunks_total) parts.push(status.index_state); // else the chunk count says it
    if (status.files_total) parts.push(`${status.files_done ?? 0}/${status.files_total} files`);
    if (status.chunks_total) parts.push(`${status.chunks_done ?? 0}/${status.chunks_total} chunks`);
    if (status.rate) parts.push(`${status.rate.toFixed(1)}/s`);
    if (status.eta_s) parts.push(`about ${Math.ceil(status.eta_s)} s left`);
    const fraction = status.chunks_total
      ? (status.chunks_done ?? 0) / status.chunks_total
      : status.files_total
        ? (status.files_done ?? 0) / status.files_total
        : undefined;
    // The milestone stays said during the dense phase (it used to flash by under the embedding lines). An
    // embedding step's message only repeats its count ("900 chunks to embed", "dense version 3: partial
    // 512/900", a number behind the live one): the count line is the one progress.
    const message = status.step === "embedding" ? null : status.message;
    const detail = [message, this.searchable ? SEARCHABLE_NOTE : null].filter(Boolean).join(" · ");
    this.showProgress("running", parts.join(" · "), fraction, detail || undefined);
    this.lastStatus = [parts.join(" · "), detail || undefined];
  }

  private showProgress(state: "running" | "done" | "error", text: string, fraction?: number, detail?: string): void {
    this.progress.hidden = false;
    this.progress.dataset.state = state;
    const bar = h("progress", { max: 1 });
    if (fraction !== undefined) bar.value = fraction;
    if (state === "done") bar.value = 1;
    const parts: HTMLElement[] = [state === "error" ? h("p", { class: "error", role: "alert" }, text) : h("p", {}, text)];
    if (state !== "error") parts.push(bar);
    if (detail) parts.push(h("p", { class: "muted small" }, detail));
    this.progress.replaceChildren(...parts);
  }
}
