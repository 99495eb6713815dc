"""The answer RepoLens gives without any LLM: the retrieved code itself, arranged to be read.

It lists the most relevant spans (path, lines, symbol) with the lines that best match the question,
and which of those symbols reference each other. Everything it says is taken from the index, so it
cannot invent code; it is labelled so nobody mistakes it for a model's explanation. Deterministic.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from rag.graph_walk import related_hits
from rag.providers.base import ChatRequest, StreamEvent, TextDelta, Usage
from rag.roles import file_role
from rag.terms import question_terms
from rag.tokens import count_tokens
from rag.types import SearchHit

LABEL = "Offline answer (no LLM configured)"
GRAPH_MISSING_NOTE = (
    "The code graph of this repository is still being built (it goes live seconds after the index "
    "becomes searchable), so this is the retrieval list: ask again in a moment for the answer explained "
    "from the code graph.\n"
)
MAX_SPANS = 6
EXCERPT_LINES = 8
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFINITION = re.compile(
    r"^\s*(?:export\s+)?(?:pub\s+)?(?:async\s+)?"
    r"(?:def|class|func|function|fn|interface|struct|type|enum|trait)\s+(?:\([^)]*\)\s*)?([A-Za-z_]\w*)"
)
_IMPORT = re.compile(r"^\s*(?:import|from|using|require|#include|package)\b")
_PROSE = frozenset({"markdown", "rst", "text", "json", "yaml", "toml"})
MAX_CONNECTIONS = 12


def defined_names(hit: SearchHit) -> set[str]:
    """Names the span defines: its symbol's last part and every def/class/func line inside it."""
    names = {match.group(1) for match in map(_DEFINITION.match, hit.text.splitlines()) if match}
    if hit.symbol:
        leaf = re.split(r"[.:#/]", hit.symbol)[-1]
        if _WORD.fullmatch(leaf) and hit.language not in _PROSE:
            names.add(leaf)
    return {name for name in names if len(name) > 2 and not name.startswith("__")}


def _line_score(line: str, terms: set[str]) -> int:
    if _IMPORT.match(line):
        return 0
    words = {word.lower() for word in _WORD.findall(line)}
    return sum(1 for term in terms if term in words or any(term in word for word in words))


def key_excerpt(
    hit: SearchHit,
    terms: set[str],
    max_lines: int = EXCERPT_LINES,
    *,
    focus: Sequence[tuple[int, int]] = (),
    shown: frozenset[int] = frozenset(),
) -> list[tuple[int, str]]:
    """The span's first line (usually the signature) plus the window that matches `terms` best.

    With `focus` (the (first, last) lines retrieval found inside a long span, best first) the window
    is one inside or around those lines: the prompt building of an 850-line handler, not its error
    handling that merely says "websocket" most often. A window that repeats lines in `shown` (already
    on the page) is taken only if no other is.
    """
    lines = hit.text.splitlines()
    if len(lines) <= max_lines:
        return [(hit.start_line + offset, line) for offset, line in enumerate(lines)]
    window = max_lines - 1
    starts = [
        start
        for first, last in focus
        for start in _window_starts(first - hit.start_line, last - hit.start_line, window, len(lines))
    ] or list(range(1, len(lines) - window + 1))
    best_start, best_score = starts[0], (False, -1)
    for start in starts:
        fresh = not any(hit.start_line + offset in shown for offset in range(start, start + window))
        score = (fresh, sum(_line_score(line, terms) for line in lines[start : start + window]))
        if score > best_score:
            best_start, best_score = start, score
    chosen = [0, *range(best_start, best_start + window)]
    return [(hit.start_line + offset, lines[offset]) for offset in chosen]


def _window_starts(low: int, high: int, window: int, size: int) -> range:
    """Starts (offsets after the first line) of the windows inside lines `low..high` of a span of
    `size` lines, or holding all of them when they are fewer than `window`."""
    first, last = sorted((low, high - window + 1))
    first, last = min(max(1, first), size - window), max(min(size - window, last), 1)
    return range(first, max(first, last) + 1)


def connections(hits: Sequence[SearchHit]) -> list[tuple[SearchHit, SearchHit, list[str]]]:
    """(a, b, names): span a uses (or, for docs, mentions) the names that span b defines."""
    defined = [defined_names(hit) for hit in hits]
    links = []
    for a_index, source in enumerate(hits):
        body = "\n".join(line for line in source.text.splitlines() if not _IMPORT.match(line))
        used_words = set(_WORD.findall(body))
        for b_index, target in enumerate(hits):
            if a_index == b_index:
                continue
            names = sorted((defined[b_index] - defined[a_index]) & used_words)
            if names:
                links.append((source, target, names))
    return links


def _where(hit: SearchHit) -> str:
    return f"{hit.path}:{hit.start_line}-{hit.end_line}"


def offline_answer(question: str, hits: Sequence[SearchHit], *, graph_missing: bool = False) -> str:
    """The full offline answer in Markdown, citing every span as `path:start-end`; `graph_missing`:
    the code graph is still being built (`explained_answer` has nothing to explain from), say so."""
    header = (
        f"**{LABEL}** — this lists the code RepoLens retrieved for your question, without a language "
        "model's explanation. Configure a provider (e.g. `OPENAI_API_KEY` or `GOOGLE_API_KEY`) "
        "for a written answer.\n"
    )
    if graph_missing:
        header += "\n" + GRAPH_MISSING_NOTE
    if not hits:
        return header + "\nNo indexed code matched the question. Try naming a file, function or class.\n"
    shown = list(hits[:MAX_SPANS])
    names = set().union(*(defined_names(hit) for hit in shown))
    parts = [header, f"\n### Most relevant code for: {question.strip()[:200]}\n"]
    for number, hit in enumerate(shown, 1):
        symbol = f" — `{hit.label}`" if hit.label else ""
        parts.append(f"\n{number}. `{_where(hit)}`{symbol} ({hit.language})\n")
        others = {name.lower() for name in names - defined_names(hit)}
        excerpt = key_excerpt(hit, question_terms(question) | others)
        width = len(str(excerpt[-1][0]))
        body = []
        previous = None
        for line_number, line in excerpt:
            if previous is not None and line_number != previous + 1:
                body.append(" " * width + " | ...")
            body.append(f"{line_number:>{width}} | {line}")
            previous = line_number
        parts.append(f"```{hit.language}\n" + "\n".join(body) + "\n```\n")
    # Code calling code says more about how things connect than documentation naming them.
    links = sorted(connections(shown), key=lambda link: link[0].language in _PROSE)[:MAX_CONNECTIONS]
    if links:
        parts.append("\n### How they connect\n")
        for source, target, used in links:
            verb = "mentions" if source.language in _PROSE else "uses"
            listed = ", ".join(f"`{name}`" for name in used)
            parts.append(f"- `{_where(source)}` {verb} {listed} from `{_where(target)}`\n")
    files = sorted({hit.path for hit in shown})
    parts.append("\n### Files\n" + "".join(f"- `{path}`\n" for path in files))
    return "".join(parts)


# Labels of the explained answer, in the languages the page offers (`rag.prompt.LANGUAGES`).
_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "uses": "It uses",
        "title": "Offline answer — generated from the code graph without a language model",
        "stored": "is a constructor argument, stored in", "read_in": "read in",
        "done": "It is done in", "reached": "It is reached from", "reads": "It reads",
        "set": "set in", "documented": "Documented in", "key": "Key code", "other": "Other retrieved code",
        "override": "overridden by", "answer": "In short", "calls": "It calls",
    },
    "ja": {
        "uses": "利用するコード",
        "title": "オフライン回答 — 言語モデルを使わずコードグラフから生成",
        "stored": "はコンストラクタ引数で、保存箇所:", "read_in": "読み取り箇所:",
        "done": "処理の場所:", "reached": "呼び出し経路", "reads": "読み取る設定",
        "set": "設定箇所", "documented": "ドキュメント", "key": "主要なコード", "other": "その他の検索結果",
        "override": "オーバーライド", "answer": "要点", "calls": "呼び出し先",
    },
    "zh": {
        "uses": "使用",
        "title": "离线回答 — 未使用语言模型，由代码图生成",
        "stored": "是构造函数参数，保存于", "read_in": "读取于",
        "done": "实现位置：", "reached": "调用路径", "reads": "读取的配置", "set": "设置于",
        "documented": "文档", "key": "关键代码", "other": "其他检索结果", "override": "被重写于",
        "answer": "要点", "calls": "调用",
    },
    "zh-tw": {
        "uses": "使用",
        "title": "離線回答 — 未使用語言模型，由程式碼圖產生",
        "stored": "是建構函式參數，儲存於", "read_in": "讀取於",
        "done": "實作位置：", "reached": "呼叫路徑", "reads": "讀取的設定", "set": "設定於",
        "documented": "文件", "key": "關鍵程式碼", "other": "其他檢索結果", "override": "被覆寫於",
        "answer": "要點", "calls": "呼叫",
    },
    "es": {
        "uses": "Usa",
        "title": "Respuesta sin conexión — generada a partir del grafo de código, sin modelo de lenguaje",
        "stored": "es un argumento del constructor, guardado en", "read_in": "leído en",
        "done": "Se realiza en", "reached": "Se llega desde", "reads": "Lee", "set": "definido en",
        "documented": "Documentado en", "key": "Código clave", "other": "Otro código recuperado",
        "override": "sobrescrito por", "answer": "En resumen", "calls": "Llama a",
    },
    "kr": {
        "uses": "사용하는 코드",
        "title": "오프라인 답변 — 언어 모델 없이 코드 그래프로 생성됨",
        "stored": "은(는) 생성자 인수이며 저장 위치:", "read_in": "읽는 위치:",
        "done": "처리 위치:", "reached": "호출 경로", "reads": "읽는 설정", "set": "설정 위치",
        "documented": "문서", "key": "핵심 코드", "other": "기타 검색된 코드", "override": "재정의",
        "answer": "요약", "calls": "호출 대상",
    },
    "vi": {
        "uses": "Sử dụng",
        "title": "Câu trả lời ngoại tuyến — tạo từ đồ thị mã, không dùng mô hình ngôn ngữ",
        "stored": "là tham số của hàm khởi tạo, lưu trong", "read_in": "được đọc trong",
        "done": "Được thực hiện trong", "reached": "Được gọi từ", "reads": "Đọc cấu hình",
        "set": "đặt tại", "documented": "Tài liệu", "key": "Mã chính", "other": "Mã khác được tìm thấy",
        "override": "được ghi đè bởi", "answer": "Tóm lại", "calls": "Gọi tới",
    },
    "pt-br": {
        "uses": "Usa",
        "title": "Resposta offline — gerada a partir do grafo de código, sem modelo de linguagem",
        "stored": "é um argumento do construtor, guardado em", "read_in": "lido em",
        "done": "É feito em", "reached": "É alcançado a partir de", "reads": "Lê", "set": "definido em",
        "documented": "Documentado em", "key": "Código principal", "other": "Outro código recuperado",
        "override": "sobrescrito por", "answer": "Em resumo", "calls": "Chama",
    },
    "fr": {
        "uses": "Il utilise",
        "title": "Réponse hors ligne — générée à partir du graphe de code, sans modèle de langage",
        "stored": "est un argument du constructeur, stocké dans", "read_in": "lu dans",
        "done": "C'est fait dans", "reached": "On y arrive depuis", "reads": "Il lit", "set": "défini dans",
        "documented": "Documenté dans", "key": "Code clé", "other": "Autre code retrouvé",
        "override": "redéfini par", "answer": "En bref", "calls": "Il appelle",
    },
    "ru": {
        "uses": "Использует",
        "title": "Офлайн-ответ — построен по графу кода, без языковой модели",
        "stored": "— аргумент конструктора, сохраняется в", "read_in": "читается в",
        "done": "Выполняется в", "reached": "Вызывается из", "reads": "Читает", "set": "задано в",
        "documented": "Документация", "key": "Ключевой код", "other": "Другой найденный код",
        "override": "переопределено в", "answer": "Коротко", "calls": "Вызывает",
    },
}  # fmt: skip


def labels(language: str | None) -> dict[str, str]:
    """The answer's labels in `language` (a code of the page's language menu; English otherwise)."""
    return _LABELS.get((language or "en").strip().lower(), _LABELS["en"])


def _span_excerpt(
    text: str, definition: Any, terms: set[str], hits: Sequence[SearchHit], shown: frozenset[int]
) -> list[tuple[int, str]]:
    """The key lines of a chain step's definition: in one of the retrieved spans that lie within it
    (if any), avoiding lines another step already shows."""
    lines = text.splitlines()[definition.start_line - 1 : definition.end_line]
    hit = SearchHit(
        definition.path, "", definition.start_line, definition.end_line, None, "\n".join(lines), 0.0
    )
    inside = [
        (h.start_line, h.end_line)
        for h in hits
        if h.path == definition.path
        and definition.start_line <= h.start_line <= h.end_line <= definition.end_line
        and (h.start_line, h.end_line) != (definition.start_line, definition.end_line)
    ]
    # Words of the definition's own name (`websocket`, `chat` in `handle_websocket_chat`) are why it
    # is on the chain; inside it they are everywhere, so the other words pick the lines.
    name = definition.qualname.lower()
    telling = {term for term in terms if term not in name} or terms
    return key_excerpt(hit, telling, focus=inside, shown=shown)


def _fenced(excerpt: list[tuple[int, str]], language: str) -> str:
    width = len(str(excerpt[-1][0])) if excerpt else 1
    body, previous = [], None
    for line_number, line in excerpt:
        if previous is not None and line_number != previous + 1:
            body.append(" " * width + " | ...")
        body.append(f"{line_number:>{width}} | {line}")
        previous = line_number
    return f"```{language}\n" + "\n".join(body) + "\n```\n"


def _step(link: Any, words: dict[str, str]) -> str:
    """One step of a chain: `Route.matches()` (`path:start-end`), marked when it overrides the last."""
    via = f"{words['override']} " if link.how == "override" else ""
    return f"{via}`{_called(link.definition)}` (`{link.ref}`)"


def _called(definition: Any) -> str:
    """`Session.send()` for code that runs, `Route` for a class."""
    return f"{definition.qualname}{'()' if definition.kind in ('function', 'method') else ''}"


def explained_answer(
    question: str, chain: Any, hits: Sequence[SearchHit], file_text: Any, language: str | None = None
) -> str:
    """The offline answer built from a `rag.graph_walk.Chain`: first the code that does it, then how
    it is reached and what it reads, each with a line citation; then the key excerpts.

    `file_text(path)` returns an indexed file's text. Falls back to `offline_answer` without a chain.
    """
    if chain is None or chain.subject is None:
        return offline_answer(question, hits)
    words = labels(language)
    subject = chain.subject
    parts = [f"**{words['title']}**\n\n"]
    parts.append(
        f"**{words['answer']}:** {words['done']} `{_called(subject)}` ({subject.kind}, `{subject.ref}`).\n"
    )
    step = chain.subject_step % len(chain.links)
    before, after = chain.links[: step + 1], chain.links[step + 1 :]
    if len(before) > 1:
        parts.append(f"- {words['reached']} " + " → ".join(_step(link, words) for link in before) + ".\n")
    if after:
        parts.append(f"- {words['calls']} " + " → ".join(_step(link, words) for link in after) + ".\n")
    if chain.uses:
        listed = ", ".join(f"`{link.definition.qualname}` (`{link.ref}`)" for link in chain.uses)
        parts.append(f"- {words['uses']} {listed}.\n")
    for name, path, line in chain.reads:
        parts.append(f"- {words['reads']} `{name}` (`{path}:{line}`).\n")
    for flow in chain.flows:
        reads = ", ".join(f"`{who}()` (`{path}:{line}`)" for who, path, line in flow.reads)
        stored = f"`{flow.constructor}()` (`{flow.path}:{flow.line}`)"
        read = f"; {words['read_in']} {reads}" if reads else ""
        parts.append(f"- `{flow.name}` {words['stored']} {stored}{read}.\n")
    # "Documented in" cites documentation, not CI workflows, manifests or changelogs.
    docs = [hit for hit in hits if hit.language in _PROSE and file_role(hit.path) == "docs"][:2]
    if docs:
        listed = ", ".join(f"`{_where(hit)}`" for hit in docs)
        parts.append(f"- {words['documented']} {listed}.\n")
    terms = question_terms(question)
    parts.append(f"\n### {words['key']}\n")
    shown: dict[str, set[int]] = {}
    for link in [*reversed(before), *after][:3]:
        definition = link.definition
        text = file_text(definition.path) or ""
        on_page = shown.setdefault(definition.path, set())
        excerpt = _span_excerpt(text, definition, terms, hits, frozenset(on_page))
        on_page.update(line for line, _ in excerpt[1:])
        language_name = next((h.language for h in hits if h.path == definition.path), "")
        parts.append(f"\n`{definition.qualname}` — `{definition.ref}`\n")
        parts.append(_fenced(excerpt, language_name))
    others = related_hits(chain, hits)
    if others:
        parts.append(f"\n### {words['other']}\n")
        parts.extend(f"- `{_where(hit)}`" + (f" `{hit.label}`" if hit.label else "") + "\n" for hit in others)
    return "".join(parts)


class OfflineProvider:
    """A ChatProvider that answers from `ChatRequest.context` (the retrieved spans) instead of a model."""

    name = "offline"
    model = "grounded-excerpts"

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        question = request.question or next(
            (m.content for m in reversed(request.messages) if m.role == "user"), ""
        )
        if request.graph_missing:
            text = offline_answer(question, request.context, graph_missing=True)
        elif request.chain is not None and request.file_text is not None:
            text = explained_answer(
                question, request.chain, request.context, request.file_text, request.language
            )
        else:
            text = offline_answer(question, request.context)
        for line in text.splitlines(keepends=True):
            yield TextDelta(line)
        yield Usage(prompt_tokens=0, completion_tokens=count_tokens(text))
