/** Page bootstrap: load the server's configuration, then wire the repository panel to the chat. */
import "highlight.js/styles/github.css";
import "./style.css";
import { getJson } from "./api";
import { ChatView } from "./chat";
import { h } from "./dom";
import { RepoPanel } from "./repos";
import { loadPreferences } from "./store";
import type { ProviderInfo } from "./types";
import { WikiView } from "./wiki";

async function start(root: HTMLElement): Promise<void> {
  const [models, languages] = await Promise.all([
    getJson<{ default_provider: string; providers: ProviderInfo[] }>("/api/models"),
    getJson<{ supported_languages: Record<string, string>; default: string }>("/lang/config"),
  ]);
  const chat = new ChatView({
    providers: models.providers,
    defaultProvider: models.default_provider,
    languages: languages.supported_languages,
    defaultLanguage: languages.default,
  });
  const wiki = new WikiView(() => loadPreferences().language ?? languages.default);
  wiki.element.hidden = true;
  const sidebar = h("aside", { class: "sidebar" });
  const panel: RepoPanel = new RepoPanel({
    onSelect: (repo) => {
      chat.select(repo);
      wiki.select(repo);
      panel.renderList();
      sidebar.classList.remove("open");
    },
    onDeleted: (repoId) => {
      chat.forget(repoId);
      wiki.forget(repoId);
    },
    selected: () => chat.repoId,
  });
  sidebar.append(panel.element);
  const toggle = h("button", { type: "button", class: "button small menu", "aria-label": "Show repositories" }, "Repositories");
  toggle.addEventListener("click", () => sidebar.classList.toggle("open"));
  const header = h(
    "header",
    { class: "topbar" },
    h("div", { class: "brand" }, h("span", { class: "logo", "aria-hidden": "true" }, "◎"), "RepoLens"),
    h("span", { class: "tagline muted" }, "Ask your code, get answers with line-level citations"),
    h("span", { class: "spacer" }),
    h("span", { class: "socket-state", title: "Connection to the server" }),
    toggle,
  );
  const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "View" });
  const views = { chat: chat.element, wiki: wiki.element };
  for (const [name, label] of [["chat", "Chat"], ["wiki", "Wiki"]] as const) {
    const tab = h("button", { type: "button", role: "tab", class: "tab", "data-view": name, "aria-selected": String(name === "chat") }, label);
    tab.addEventListener("click", () => {
      for (const other of tabs.children) other.setAttribute("aria-selected", String(other === tab));
      views.chat.hidden = name !== "chat";
      views.wiki.hidden = name !== "wiki";
    });
    tabs.append(tab);
  }
  root.replaceChildren(header, h("div", { class: "layout" }, sidebar, h("main", {}, tabs, chat.element, wiki.element)));
  const repos = await panel.load();
  const remembered = panel.find(loadPreferences().repoId ?? null) ?? (repos.length === 1 ? repos[0] : undefined);
  if (remembered) {
    chat.select(remembered);
    wiki.select(remembered);
  }
  else sidebar.classList.add("open");
  panel.renderList();
  document.body.dataset.ready = "true";
}

const root = document.getElementById("app")!;
start(root).catch((error: Error) => {
  root.replaceChildren(
    h("div", { class: "fatal", role: "alert" }, h("h1", {}, "RepoLens could not start"), h("p", {}, error.message), h("button", { class: "button primary", onclick: () => location.reload() }, "Reload")),
  );
});
