/**
 * Model output → safe DOM. The answer is untrusted: marked produces HTML, DOMPurify strips
 * scripts, event-handler attributes and `javascript:` URLs before anything reaches the page,
 * and highlight.js then works on text only. Mermaid (large) is imported on first use.
 */
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/common";
import { marked } from "marked";
import { copyText, h } from "./dom";

marked.setOptions({ gfm: true, breaks: false });

// Links in answers open in a new tab and never get the page as `window.opener`.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.getAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function sanitize(markdown: string): string {
  const html = marked.parse(markdown, { async: false });
  return DOMPurify.sanitize(html, { USE_PROFILES: { html: true }, FORBID_TAGS: ["style", "form", "input"] });
}

export function highlight(code: HTMLElement, language?: string | null): void {
  if (language && hljs.getLanguage(language)) code.classList.add(`language-${language}`);
  hljs.highlightElement(code);
}

/** Render `markdown` into `target`; `final` also draws Mermaid diagrams (never mid-stream). */
export function renderMarkdown(target: HTMLElement, markdown: string, final: boolean): void {
  target.innerHTML = sanitize(markdown);
  for (const code of target.querySelectorAll<HTMLElement>("pre > code")) {
    const pre = code.parentElement!;
    if (code.classList.contains("language-mermaid")) {
      // Until it is drawn the block shows a placeholder, not its raw `graph TD` text (the
      // Mermaid chunk loads on first use); a diagram that cannot be drawn shows its source.
      pre.classList.add("mermaid-source");
      pre.dataset.pending = final ? "Drawing the diagram…" : "The diagram is drawn when the answer is complete.";
      continue;
    }
    const language = [...code.classList].find((name) => name.startsWith("language-"))?.slice(9);
    if (!language || hljs.getLanguage(language)) hljs.highlightElement(code);
    const button = h("button", { class: "copy-code", type: "button", title: "Copy code" }, "Copy");
    button.addEventListener("click", () => copyText(code.textContent ?? "", button));
    pre.append(button);
  }
  if (final) void renderMermaid(target);
}

let mermaidReady: Promise<typeof import("mermaid").default> | null = null;
let diagramCount = 0;

async function renderMermaid(target: HTMLElement): Promise<void> {
  const blocks = [...target.querySelectorAll<HTMLElement>("pre.mermaid-source")];
  if (blocks.length === 0) return;
  mermaidReady ??= import("mermaid").then(({ default: mermaid }) => {
    mermaid.initialize({
      startOnLoad: false,
      securityLevel: "strict",
      htmlLabels: false,
      flowchart: { htmlLabels: false },
      theme: "default",
    });
    return mermaid;
  });
  const mermaid = await mermaidReady;
  for (const pre of blocks) {
    const source = pre.querySelector("code")?.textContent ?? "";
    try {
      const { svg } = await mermaid.render(`mermaid-${++diagramCount}`, source);
      const figure = h("div", { class: "mermaid-diagram" });
      figure.innerHTML = DOMPurify.sanitize(svg, { USE_PROFILES: { svg: true, svgFilters: true, html: true } });
      pre.replaceWith(figure);
    } catch (error) {
      pre.classList.add("mermaid-error");
      delete pre.dataset.pending;
      pre.title = `diagram could not be drawn: ${String(error)}`;
    }
  }
}
