/**
 * The Wiki tab: the selected repository's server-generated wiki. A page tree by section, the page
 * rendered as markdown with its Mermaid diagrams, citations that open the source viewer, links
 * between pages, and Generate / Regenerate with each page's progress from the server's SSE.
 */
import { ApiError, getJson, postEvents, repoPath } from "./api";
import { linkCitations } from "./chat";
import { h } from "./dom";
import { renderMarkdown } from "./markdown";
import { accessRefused, tokenFor } from "./tokens";
import type { ChatEvent, RepoRecord, Wiki, WikiPage, WikiSummary } from "./types";
import { openSource } from "./viewer";

export class WikiView {
  readonly element: HTMLElement;
  private repo: RepoRecord | null = null;
  private wiki: Wiki | null = null;
  private current: string | null = null;
  private running: AbortController | null = null;
  private readonly title = h("h2", { class: "wiki-title" }, "Wiki");
  private readonly meta = h("p", { class: "muted small wiki-meta" });
  private readonly tree = h("nav", { class: "wiki-tree", "aria-label": "Wiki pages" });
  private readonly article = h("article", { class: "wiki-page markdown", "aria-live": "polite" });
  private readonly progress = h("div", { class: "progress wiki-progress", hidden: true, role: "status" });
  private readonly offline = h("input", { type: "checkbox", name: "wiki_offline" });
  private readonly generate = h("button", { type: "button", class: "button primary generate-wiki" }, "Generate wiki");

  constructor(private readonly languageOf: () => string) {
    this.generate.addEventListener("click", () => void this.run());
    this.article.addEventListener("click", (event) => {
      const link = (event.target as HTMLElement).closest("a");
      const target = link?.getAttribute("href");
      if (target?.startsWith("#") && this.wiki?.pages[target.slice(1)]) {
        event.preventDefault();
        this.show(target.slice(1));
      }
    });
    this.element = h(
      "section",
      { class: "wiki" },
      h(
        "div",
        { class: "wiki-head" },
        h("div", { class: "wiki-heading" }, this.title, this.meta),
        h("label", { class: "check small", title: "Write the wiki from the code alone, without a language model" }, this.offline, " Offline (no LLM)"),
        this.generate,
      ),
      this.progress,
      h("div", { class: "wiki-body" }, this.tree, this.article),
    );
    this.render();
  }

  select(repo: RepoRecord | null): void {
    this.running?.abort();
    this.repo = repo;
    this.wiki = null;
    this.current = null;
    this.progress.hidden = true;
    this.render();
    if (repo) void this.load();
  }

  forget(repoId: string): void {
    if (this.repo?.id === repoId) this.select(null);
  }

  private headers(): Record<string, string> {
    const token = this.repo ? tokenFor(this.repo.id) : undefined;
    return token ? { "X-Repo-Token": token } : {};
  }

  private async load(): Promise<void> {
    const repo = this.repo;
    if (!repo) return;
    try {
      // Ask which wikis exist first: before the first one this is the empty state, not a 404.
      const language = this.languageOf();
      const { wikis } = await getJson<{ wikis: WikiSummary[] }>(`${repoPath(repo.id)}/wikis`, { headers: this.headers() });
      const query = new URLSearchParams({ language });
      const wiki = wikis.some((summary) => summary.language === language)
        ? await getJson<Wiki>(`${repoPath(repo.id)}/wiki?${query}`, { headers: this.headers() })
        : null;
      if (this.repo?.id !== repo.id) return;
      this.wiki = wiki;
      if (wiki) {
        this.offline.checked = wiki.mode === "offline"; // updating keeps the wiki's mode unless changed
        this.current = this.current && wiki.pages[this.current] ? this.current : (wiki.structure.pages[0]?.id ?? null);
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) accessRefused(repo.id, error.message);
      else if (!(error instanceof ApiError && error.status === 404)) this.article.replaceChildren(h("p", { class: "error", role: "alert" }, (error as Error).message));
      this.wiki = null;
    }
    this.render();
  }

  private async run(): Promise<void> {
    const repo = this.repo;
    if (!repo || this.running) return;
    const controller = new AbortController();
    this.running = controller;
    this.generate.disabled = true;
    this.element.dataset.state = "generating";
    const bar = h("progress", { max: 1, value: 0 });
    const line = h("p", {}, "Starting…");
    const notes = h("ul", { class: "wiki-notes small muted" });
    this.progress.replaceChildren(line, bar, notes);
    this.progress.dataset.state = "running";
    this.progress.hidden = false;
    let failed = "";
    try {
      // Out-of-date pages: rewrite only those. Up to date: "Regenerate" rewrites every page.
      const force = Boolean(this.wiki) && this.wiki!.stale_pages.length === 0 && this.wiki!.complete;
      const body = { offline: this.offline.checked, language: this.languageOf(), force };
      await postEvents(`${repoPath(repo.id)}/wiki`, body, (raw) => {
        const event = raw as unknown as ChatEvent;
        if (event.type === "status") line.textContent = event.message ?? "";
        else if (event.type === "wiki" && event.event === "structure") {
          bar.max = event.total ?? 1;
          line.textContent = `Planned ${event.total} pages: ${event.title}`;
        } else if (event.type === "wiki" && event.event === "page") {
          bar.value = event.index ?? 0;
          const why = event.reused ? " (unchanged)" : event.reason ? ` (written again: ${event.reason})` : "";
          line.textContent = `Page ${event.index} of ${event.total}: ${event.title}${why}`;
        } else if (event.type === "wiki" && event.event === "note") notes.append(h("li", {}, event.message ?? ""));
        else if (event.type === "error") failed = event.message;
        else if (event.type === "done" && event.wiki) {
          const { pages, regenerated, reused, reasons } = event.wiki as {
            pages: number; regenerated: number; reused: number; reasons?: Record<string, number>;
          };
          // Why pages of the previous wiki were written again (an upgrade, another model, changed files).
          const because = Object.entries(reasons ?? {}).map(([why, count]) => `${count} because ${why}`).join(", ");
          line.textContent = `Done: ${pages} pages, ${regenerated} written${because ? ` (${because})` : ""}, ${reused} unchanged`;
        }
      }, controller.signal);
    } catch (error) {
      failed = (error as Error).message;
    } finally {
      this.running = null;
      this.generate.disabled = false;
      delete this.element.dataset.state;
    }
    this.progress.dataset.state = failed ? "error" : "done";
    if (failed) line.textContent = `Wiki generation failed: ${failed}`;
    if (this.repo?.id === repo.id) await this.load();
  }

  private show(pageId: string): void {
    this.current = pageId;
    this.render();
    this.article.scrollTop = 0;
  }

  private render(): void {
    const { repo, wiki } = this;
    this.generate.hidden = !repo;
    this.generate.textContent = !wiki ? "Generate wiki" : wiki.stale_pages.length || !wiki.complete ? "Update wiki" : "Regenerate";
    if (!repo) {
      this.title.textContent = "Wiki";
      this.meta.textContent = "";
      this.tree.replaceChildren();
      this.article.replaceChildren(h("div", { class: "empty" }, h("h3", {}, "No repository selected"), h("p", {}, "Pick a repository to read or generate its wiki.")));
      return;
    }
    if (!wiki) {
      this.title.textContent = "Wiki";
      this.meta.textContent = "";
      this.tree.replaceChildren();
      if (!this.article.querySelector(".error")) {
        this.article.replaceChildren(
          h("div", { class: "empty" }, h("h3", {}, "No wiki yet"), h("p", {}, "Generate one: an overview, a page per module and guides from the docs, every statement cited to lines. Without a configured model it is written from the code alone.")),
        );
      }
      return;
    }
    this.title.textContent = wiki.structure.title;
    const how = wiki.mode === "offline" ? "without a language model" : `with ${wiki.provider} (${wiki.model})`;
    const why = [...new Set(Object.values(wiki.stale_reasons ?? {}))].join("; ");
    const stale = wiki.stale_pages.length ? ` · ${wiki.stale_pages.length} page(s) out of date${why ? `: ${why}` : ""}` : "";
    const partial = wiki.complete ? "" : " · incomplete (interrupted): Update wiki resumes it";
    const source = wiki.commit ? ` at commit ${wiki.commit.slice(0, 10)}` : ""; // a plain folder has none
    this.meta.textContent = `Written ${how}${source}${stale}${partial}`;
    this.tree.replaceChildren(...this.renderTree(wiki));
    const page = this.current ? wiki.pages[this.current] : undefined;
    if (page) this.renderPage(page);
  }

  private renderTree(wiki: Wiki): HTMLElement[] {
    const sections = wiki.structure.sections?.length
      ? wiki.structure.sections
      : [{ id: "all", title: "Pages", pages: wiki.structure.pages.map((page) => page.id) }];
    return sections.map((section) =>
      h(
        "div",
        { class: "wiki-section" },
        h("h3", {}, section.title),
        h(
          "ul",
          {},
          ...section.pages
            .filter((id) => wiki.pages[id])
            .map((id) =>
              h(
                "li",
                {},
                h("button", { type: "button", class: id === this.current ? "wiki-link current" : "wiki-link", "data-page-id": id, onclick: () => this.show(id) }, wiki.pages[id].title),
              ),
            ),
        ),
      ),
    );
  }

  private renderPage(page: WikiPage): void {
    const body = h("div", { class: "wiki-content" });
    this.article.replaceChildren(h("h1", {}, page.title), body);
    renderMarkdown(body, page.content, true);
    const repoId = this.repo!.id;
    if (page.citations.length) linkCitations(body, page.citations, (item) => void openSource(repoId, item));
    if (page.filePaths.length) {
      this.article.append(h("p", { class: "muted small wiki-files" }, `Files: ${page.filePaths.join(", ")}`));
    }
  }
}
