/**
 * The source viewer: the cited lines of a file with some context, highlighted, from the file
 * endpoint. A private repository's token goes in the `X-Repo-Token` header, never the URL.
 */
import { ApiError, getJson, repoPath } from "./api";
import { formatLines, h, hostUrl } from "./dom";
import { highlight } from "./markdown";
import { accessRefused, tokenFor } from "./tokens";
import type { Source } from "./types";

const CONTEXT_LINES = 6;

interface FileSlice {
  path: string;
  language: string | null;
  start_line: number;
  end_line: number;
  total_lines: number;
  text: string;
}

let dialog: HTMLDialogElement | null = null;

function ensureDialog(): HTMLDialogElement {
  if (dialog) return dialog;
  dialog = h("dialog", { class: "viewer", "aria-label": "Source viewer" });
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog!.close();
  });
  document.body.append(dialog);
  return dialog;
}

export async function openSource(repoId: string, source: Source): Promise<void> {
  const box = ensureDialog();
  const title = `${source.path}:${formatLines(source)}`;
  const body = h("div", { class: "viewer-body" }, h("p", { class: "muted" }, "Loading…"));
  const url = hostUrl(source.url);
  const link = url
    ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: "button" }, "Open at source ↗")
    : null;
  const close = h("button", { type: "button", class: "button", onclick: () => box.close() }, "Close");
  box.replaceChildren(h("header", {}, h("h2", {}, title), h("div", { class: "row" }, link, close)), body);
  if (!box.open) box.showModal();
  const start = Math.max(1, source.start_line - CONTEXT_LINES);
  const end = source.end_line + CONTEXT_LINES;
  const query = new URLSearchParams({ path: source.path, start: String(start), end: String(end) });
  try {
    const token = tokenFor(repoId);
    const slice = await getJson<FileSlice>(`${repoPath(repoId)}/file?${query}`, token ? { headers: { "X-Repo-Token": token } } : undefined);
    body.replaceChildren(renderSlice(slice, source));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      // The token field is in the page behind this modal dialog: close it so the field can take focus.
      box.close();
      accessRefused(repoId, error.message);
      return;
    }
    body.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not load ${source.path}: ${(error as Error).message}`));
  }
}

function renderSlice(slice: FileSlice, cited: Source): HTMLElement {
  const code = h("code", {}, slice.text);
  highlight(code, slice.language);
  // hljs output is escaped text in spans, so splitting it at line breaks stays safe (a token
  // spanning lines loses its colour on the later lines, which is acceptable in a viewer).
  const lines = code.innerHTML.split("\n");
  const table = h("div", { class: "lines" });
  lines.forEach((html, offset) => {
    const number = slice.start_line + offset;
    const inCitation = number >= cited.start_line && number <= cited.end_line;
    const text = h("code", { class: "hljs" });
    text.innerHTML = html || " ";
    table.append(h("div", { class: inCitation ? "line cited" : "line", "data-line": number }, h("span", { class: "number" }, String(number)), text));
  });
  const footer = h("p", { class: "muted" }, `Lines ${slice.start_line}–${slice.end_line} of ${slice.total_lines}`);
  return h("div", {}, h("pre", { class: "source" }, table), footer);
}
