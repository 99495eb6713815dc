/** A tiny element builder: the page is small enough that a framework would only add weight. */

type Child = Node | string | null | undefined | false;
type Props = Record<string, string | number | boolean | EventListener | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined) continue;
    if (typeof value === "function") element.addEventListener(name.replace(/^on/, ""), value);
    else if (typeof value !== "string" && name in element) (element as unknown as Record<string, unknown>)[name] = value;
    else if (value !== false) element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child) element.append(child);
  return element;
}

/** Copy text and acknowledge it on the button for a moment. */
export async function copyText(text: string, button: HTMLElement): Promise<void> {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => (button.textContent = label), 1200);
}

export function formatLines(source: { start_line: number; end_line: number }): string {
  return source.start_line === source.end_line ? `${source.start_line}` : `${source.start_line}-${source.end_line}`;
}

/** A short name for a repository: remote ids read well as they are, local ones by their folder. */
export function repoName(repo: { id: string; platform: string }): string {
  return repo.platform === "local" ? `${repo.id.split("/").pop()} (local)` : repo.id;
}

/** A source's link when it points at the repository's host (GitHub, GitLab, Bitbucket). A local
 * folder's link is our own file API (`/api/repos/…/file`): JSON in a new tab, where the source viewer
 * already shows the lines, so no "open at source" for it. */
export function hostUrl(url: string | null | undefined): string | null {
  return url && /^https?:\/\//.test(url) ? url : null;
}
