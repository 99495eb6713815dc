"""File roles, intent × role ranking and doc-to-code links, on a fixture repository ingested for real.

The fixture is written so that the plain fusion gets it wrong: the docs page and the test repeat
the question's words, the implementation does not (it says `priority`, `deadline`, `heap`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from api.cli.search_cmd import explain_line
from ingest import IngestOptions, ingest
from rag.comments import comment_only
from rag.embedders import Embedder
from rag.lexical import query_terms, tokenize
from rag.ranking import (
    Ranking,
    file_topic,
    mentioned_identifiers,
    module_names,
    named_share,
    names_the_file,
    public_twin,
    query_intent,
    question_words,
)
from rag.retrieval import Retriever
from rag.roles import file_role, inline_test_modules, mostly_within
from rag.store import Store

pytest_plugins = ["tests.support.repos"]

FILES = {
    "scheduler/picker.py": """import heapq


def pick_next_job(queue):
    entries = [(job.priority, job.deadline, job.id, job) for job in queue.pending]
    heapq.heapify(entries)
    while entries:
        _, _, _, job = heapq.heappop(entries)
        if job.ready():
            return job
    return None
""",
    "scheduler/backlog.py": """class Dispatcher:
    def __init__(self, pool):
        self.pool = pool

    def drain_backlog(self, limit=100):
        moved = 0
        while self.pool.spill and moved < limit:
            self.pool.admit(self.pool.spill.popleft())
            moved += 1
        return moved
""",
    "workers/pool.py": '''class WorkerPool:
    """Worker processes that run jobs; a saturated pool refuses new work."""

    def saturated(self):
        return len(self.busy) >= self.size

    def submit(self, job):
        if self.saturated():
            raise PoolSaturated(self.size)
        self.busy.add(job)
''',
    "billing/invoice.py": """def total_due(invoice):
    return sum(line.amount * line.quantity for line in invoice.lines) - invoice.discount
""",
    "auth/tokens.py": """def issue_token(user, ttl=3600):
    return sign({"sub": user.id, "exp": now() + ttl})
""",
    "storage/blobs.py": """def put_blob(bucket, key, data):
    bucket.write(key, compress(data))
""",
    "web/render.js": """export function renderJobList(jobs) {
  return jobs.map((job) => `<li>${job.name}: ${job.state}</li>`).join("");
}
""",
    "docs/scheduling.md": """# Scheduling

## How the scheduler decides which job runs next

The scheduler decides which job runs next by looking at every pending job in the queue: the job
that runs next is the ready job with the best priority, and among equals the earliest deadline.
The scheduler decides again each time a job finishes, so the next job is always the best one.

## Configuring job priorities

To configure job priorities, set `priority` on each job when you enqueue it, for example
`queue.put(Job(priority=1))`. Lower numbers run first. This is how you give a job precedence.

## Overload

When workers are saturated, submissions pile up in the holding area and wait there. Operators
flush the holding area into the workers with `Dispatcher.drain_backlog()` once capacity returns,
so piled-up submissions are not lost while the workers are saturated.
""",
    "tests/test_picker.py": """from scheduler.picker import pick_next_job


def test_the_scheduler_decides_which_job_runs_next():
    queue = make_queue([job(priority=2), job(priority=1)])
    # the scheduler decides which job runs next: the best priority wins
    assert pick_next_job(queue).priority == 1


def test_the_next_job_is_none_when_no_job_is_ready():
    assert pick_next_job(make_queue([])) is None
""",
}


def write_repo(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, shared_embedder: Embedder) -> tuple[Store, str]:
    root = write_repo(tmp_path_factory.mktemp("ranking") / "scheduler-repo", FILES)
    store = Store(tmp_path_factory.mktemp("ranking-home"))
    report = ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder)
    return store, report.repo_id


@pytest.fixture(scope="module")
def retriever(indexed: tuple[Store, str], shared_embedder: Embedder) -> Retriever:
    store, repo_id = indexed
    return Retriever(store.open(repo_id), shared_embedder)


def paths(hits) -> list[str]:  # noqa: ANN001
    return [hit.path for hit in hits]


HOW_QUESTION = "how does the scheduler decide which job runs next?"


def test_a_how_question_ranks_the_implementation_above_the_doc_and_the_test(retriever: Retriever) -> None:
    plain = Retriever(retriever.index, retriever.embedder, ranking=Ranking(roles=False, links=False))
    assert paths(plain.search(HOW_QUESTION, 5))[0] != "scheduler/picker.py", (
        "the fixture no longer tests roles"
    )
    ranked = paths(retriever.search(HOW_QUESTION, 10))
    assert ranked[0] == "scheduler/picker.py"
    assert ranked.index("scheduler/picker.py") < ranked.index("docs/scheduling.md")
    assert ranked.index("scheduler/picker.py") < ranked.index("tests/test_picker.py")


def test_a_usage_question_still_ranks_the_doc_first(retriever: Retriever) -> None:
    assert paths(retriever.search("how do I configure job priorities?", 5))[0] == "docs/scheduling.md"


def test_a_question_about_tests_ranks_the_test_first(retriever: Retriever) -> None:
    assert paths(retriever.search("which test checks that the best priority runs next?", 5))[0] == (
        "tests/test_picker.py"
    )


def test_an_identifier_named_in_a_matched_doc_pulls_its_definition_in(retriever: Retriever) -> None:
    question = "what do operators do when workers are saturated and submissions pile up?"
    unlinked = Retriever(retriever.index, retriever.embedder, ranking=Ranking(roles=True, links=False))
    before = {hit.path: hit.score for hit in unlinked.search(question, 10)}
    hits = retriever.search(question, 3, explain=True)
    assert "scheduler/backlog.py" in paths(hits)
    linked = next(hit for hit in hits if hit.path == "scheduler/backlog.py")
    assert linked.score > before.get("scheduler/backlog.py", 0.0)
    assert "def drain_backlog" in linked.text
    assert linked.explain is not None
    assert linked.explain["linked_from"] == "docs/scheduling.md"
    assert linked.explain["link_boost"] > 0


def test_a_chunk_the_question_names_gains_weight(retriever: Retriever) -> None:
    question = "how does it pick the next job?"
    hits = {hit.symbol: hit for hit in retriever.search(question, 10, explain=True)}
    named = hits["pick_next_job"]
    assert named.explain is not None and named.explain["name_weight"] == pytest.approx(1.3)
    unnamed = Retriever(retriever.index, retriever.embedder, ranking=Ranking(names=False))
    before = {hit.symbol: hit for hit in unnamed.search(question, 10, explain=True)}["pick_next_job"]
    assert before.explain is not None and "name_weight" not in before.explain
    assert named.score > before.score
    usage = retriever.search("how do I pick the next job?", 10, explain=True)
    assert all(hit.explain is not None and "name_weight" not in hit.explain for hit in usage)


def test_named_share_counts_the_words_of_the_innermost_name() -> None:
    question = "is the address a loopback address?"
    terms = frozenset(tokenize(question))
    assert named_share("Address6.isLoopback", terms, question_words(question)) == 1.0
    assert named_share("Address6.isLoopback", terms) == 0.5, (
        "`is` is a word of the name the question must say"
    )
    assert named_share("LRUCache.#getRemainingTTL", frozenset(tokenize("remaining time"))) == pytest.approx(
        1 / 3
    )
    assert named_share("Address6.isMulticast", terms) == 0.0
    assert named_share("isLoopback, isPrivate", terms) == 0.0
    assert named_share(None, terms) == 0.0


def test_a_stop_word_of_a_name_counts_so_a_property_does_not_outrank_the_method() -> None:
    """`is_redirect` is no more said by "how are redirects followed?" than `resolve_redirects`: with its
    `is` left out it was wholly said, and the property got the whole name weight over the method."""
    question = "how are redirects followed and limited?"
    terms, said = frozenset(tokenize(question)), question_words(question)
    assert named_share("Response.is_redirect", terms, said) == 0.5
    assert named_share("SessionRedirectMixin.resolve_redirects", terms, said) == 0.5
    assert named_share("Cache.has", frozenset(tokenize("has the key")), question_words("has the key")) == 1.0


def test_explain_gives_role_intent_ranks_and_weight(retriever: Retriever) -> None:
    hits = retriever.search(HOW_QUESTION, 3, explain=True)
    first = hits[0].explain
    assert first is not None
    assert first["role"] == "source" and first["intent"] == "code"
    assert first["role_weight"] == 1.0
    assert first["dense_rank"] is not None or first["lexical_rank"] is not None
    assert all(hit.explain is not None for hit in retriever.search(HOW_QUESTION, 10, explain=True))
    assert all(hit.explain is None for hit in retriever.search(HOW_QUESTION, 3))
    assert "explain" in hits[0].to_json()


def test_roles_are_stored_and_leave_with_their_file(tmp_path: Path, shared_embedder: Embedder) -> None:
    root = write_repo(tmp_path / "repo", FILES)
    store = Store(tmp_path / "home")
    repo_id = ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder).repo_id
    index = store.open(repo_id)
    roles = index.roles()
    assert roles["scheduler/picker.py"] == roles["scheduler/backlog.py"] == "source"
    assert (roles["docs/scheduling.md"], roles["tests/test_picker.py"]) == ("docs", "test")
    assert [d.path for d in index.definition("Dispatcher.drain_backlog")] == ["scheduler/backlog.py"]
    (root / "scheduler/backlog.py").unlink()
    (root / "CHANGELOG.md").write_text("# 1.1\n\n- The dispatcher is gone.\n")
    ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder)
    updated = store.open(repo_id)
    assert "scheduler/backlog.py" not in updated.roles()
    assert updated.roles()["CHANGELOG.md"] == "changelog"
    assert updated.definition("Dispatcher") == updated.definition("drain_backlog") == []
    assert updated.find_symbol("Dispatcher") == []
    assert updated.definition("pick_next_job")


@pytest.mark.parametrize(
    ("path", "role"),
    [
        ("src/requests/sessions.py", "source"),
        ("tests/test_utils.py", "test"),
        ("command_test.go", "test"),
        ("test/res.redirect.js", "test"),
        ("web/app.spec.ts", "test"),
        ("axum/src/routing/tests/nest.rs", "test"),
        ("docs/user/quickstart.rst", "docs"),
        ("README.md", "docs"),
        ("axum/src/docs/routing/route.md", "docs"),
        ("doc/man_docs.go", "source"),
        ("security.go", "source"),
        ("history.py", "source"),
        ("examples/static-files/index.js", "example"),
        ("examples/testing/src/main.rs", "example"),
        ("tests/examples/basic.py", "test"),
        ("CHANGELOG.md", "changelog"),
        ("HISTORY.md", "changelog"),
        ("docs/release-notes.md", "changelog"),
        ("pyproject.toml", "config"),
        ("Makefile", "config"),
        ("requirements-dev.txt", "config"),
        (".eslintrc.yml", "config"),
        ("api/types_pb2.py", "generated"),
        ("dist/app.min.js", "generated"),
        ("vendor/github.com/x/y.go", "vendored"),
    ],
)
def test_file_roles_come_from_paths_and_names(path: str, role: str) -> None:
    assert file_role(path) == role


def test_generated_code_is_recognised_by_its_header() -> None:
    assert file_role(
        "api/zz_types.go", "// Code generated by protoc-gen-go. DO NOT EDIT.\npackage api\n"
    ) == ("generated")
    assert file_role("tables.py", "# Auto generated by tools/make_tables.py\nTABLE = []\n") == "generated"
    assert file_role("ids.py", '"""Ids generated by the server are opaque."""\n') == "source"


@pytest.mark.parametrize(
    ("query", "intent"),
    [
        ("how does the router decide which route matches?", "code"),
        ("where is the config file validated?", "code"),
        ("how do I add middleware to my app?", "usage"),
        ("example of keeping user sessions", "usage"),
        ("which tests check redirects?", "test"),
        ("where is the test for the router?", "test"),
        ("how does the test client send requests?", "code"),
        ("how are arguments validated, for example an exact count?", "code"),
        ("how is the usage text rendered?", "code"),
        ("how does the documentation generator write files?", "code"),
        ("what do the docs say about sessions?", "docs"),
        ("what changed in the release notes about cookies?", "docs"),
    ],
)
def test_query_intent_comes_from_the_wording(query: str, intent: str) -> None:
    assert query_intent(query) == intent


def test_mentioned_identifiers_are_calls_dotted_names_and_code_spans() -> None:
    text = "Use `Session(max_redirects=3)` or Router.add_route; resolve_redirects() follows them. See self.x"
    names = mentioned_identifiers(text)
    assert {"Session", "Router.add_route", "resolve_redirects", "max_redirects"} <= set(names)
    assert "self" not in names and "self.x" not in names


_CACHE_JS = (
    "class LRUCache {\n"
    "  has(key) {\n    return this.#has(key, this.options);\n  }\n\n"
    + "".join(
        f"  resize{i}(size) {{\n"
        + "".join(
            f"    this.slots{j} = this.allocate(size * {j + i}, this.weights[{j}]);\n" for j in range(6)
        )
        + "  }\n\n"
        for i in range(6)
    )
    + "  #has(key, options) {\n"
    "    const index = this.keyMap.get(key);\n"
    "    if (index === undefined) return false;\n"
    "    const stale = this.isStale(index);\n"
    "    if (!stale || options.allowStale) return true;\n"
    "    this.recency.touch(index, options.updateRecency);\n"
    "    return false;\n  }\n"
    "}\n"
)


@pytest.fixture(scope="module")
def cache_retriever(tmp_path_factory: pytest.TempPathFactory, shared_embedder: Embedder) -> Retriever:
    root = write_repo(tmp_path_factory.mktemp("twins") / "cache-repo", {"lib/cache.js": _CACHE_JS})
    store = Store(tmp_path_factory.mktemp("twins-home"))
    report = ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder)
    return Retriever(store.open(report.repo_id), shared_embedder)


def test_a_private_definition_lifts_its_public_twin(cache_retriever: Retriever) -> None:
    """`#has` holds the words of "is the key in the cache and not stale?"; the public `has` users
    call says little, so without the twin step only the private one is found (one hit: the file's
    chunks touch, and more hits would fold them into one)."""
    question = "check whether a key is stored in the cache and is not stale"
    unnamed = Retriever(cache_retriever.index, cache_retriever.embedder, ranking=Ranking(names=False))
    assert [hit.symbol for hit in unnamed.search(question, 1)] == ["LRUCache.#has"]
    (public,) = cache_retriever.search(question, 1, explain=True)
    assert public.symbol == "LRUCache.has" and "return this.#has(key" in public.text
    assert public.explain is not None and public.explain["public_twin_of"] == "LRUCache.#has"


@pytest.mark.parametrize(
    ("symbol", "twin"),
    [
        ("LRUCache.#has", "LRUCache.has"),
        ("Semaphore._acquire", "Semaphore.acquire"),
        ("_get", "get"),
        ("LRUCache.has", None),
        ("Client.__init__", None),
        ("a, _b", None),
        (None, None),
    ],
)
def test_public_twin_names(symbol: str | None, twin: str | None) -> None:
    assert public_twin(symbol) == twin


_SESSION_EXAMPLES = {
    "examples/session/index.js": """const app = require("../../lib/app")();
const store = require("./store");

app.use(store.middleware({ secret: "keyboard cat" }));

app.get("/", function (req, res) {
  const views = (req.session.views || 0) + 1;
  req.session.views = views;
  res.send("viewed " + views + " times");
});
""",
    "examples/auth/index.js": """const app = require("../../lib/app")();

app.post("/login", function (req, res) {
  authenticate(req.body.username, req.body.password, function (err, user) {
    if (user) {
      // keep the user in the session: regenerate the session, then store the user in the session
      req.session.regenerate(function () {
        req.session.user = user;
        req.session.success = "Authenticated as " + user.name;
        res.redirect("/");
      });
    }
  });
});

function restrict(req, res, next) {
  if (req.session.user) next();
  else res.redirect("/login");
}
""",
}


def test_a_file_named_after_the_question_gains_weight(tmp_path: Path, shared_embedder: Embedder) -> None:
    """The auth example repeats "user" and "session"; the session example is named for the question
    (its folder: `index.js` names nothing). Without the path weight the auth example comes first."""
    root = write_repo(tmp_path / "examples-repo", _SESSION_EXAMPLES)
    store = Store(tmp_path / "home")
    index = store.open(ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder).repo_id)
    question = "example of keeping user sessions in express"
    unweighted = Retriever(index, shared_embedder, ranking=Ranking(paths=False))
    assert paths(unweighted.search(question, 2))[0] == "examples/auth/index.js"
    best, other = Retriever(index, shared_embedder).search(question, 2, explain=True)
    assert best.path == "examples/session/index.js"
    assert best.explain is not None and best.explain["path_weight"] == pytest.approx(1.05)
    assert other.explain is not None and "path_weight" not in other.explain
    assert "file name ×1.05" in explain_line(best.explain)


@pytest.mark.parametrize(
    ("path", "topic"),
    [
        ("rich/markup.py", "markup"),
        ("axum/src/routing/path_router.rs", "path_router"),
        ("examples/session/index.js", "session"),
        ("axum/src/routing/mod.rs", "routing"),
        ("starlette/__init__.py", "starlette"),
        ("lib/router.test.ts", "router"),
        ("index.js", ""),
        (".eslintrc.json", "eslintrc"),
    ],
)
def test_file_topic_is_the_name_or_the_folder_of_a_generic_one(path: str, topic: str) -> None:
    assert file_topic(path) == topic


# A command tree's help command and, in a file named after something else, "active help" for
# completions, which says "help" and "added" more often than the function that adds the command.
_HELP_COMMAND = {
    "command.go": """package cli

import "fmt"

// Command is one node of the tree of a command line application.
type Command struct {
	Use         string
	Short       string
	Run         func(c *Command, args []string)
	commands    []*Command
	helpCommand *Command
}

// Execute runs the command with the arguments of the process, finding the subcommand to run.
func (c *Command) Execute(args []string) error {
	c.InitDefaultHelpCmd()
	cmd, rest := c.Find(args)
	if cmd == nil {
		return fmt.Errorf("unknown command %q for %q", args[0], c.Use)
	}
	if cmd.Run == nil {
		return cmd.Usage()
	}
	cmd.Run(cmd, rest)
	return nil
}

// Find walks the tree of commands along the arguments and returns the deepest one they name.
func (c *Command) Find(args []string) (*Command, []string) {
	for i, arg := range args {
		next := c.findChild(arg)
		if next == nil {
			return c, args[i:]
		}
		c = next
	}
	return c, nil
}

// Usage prints how to call the command to its output.
func (c *Command) Usage() error {
	fmt.Println("Usage: " + c.Use + " " + c.Short)
	for _, child := range c.commands {
		fmt.Println("  " + child.Use + " " + child.Short)
	}
	return nil
}

// InitDefaultHelpCmd adds the default help command to c.
// It is called when c executes; if c already has a help command it does nothing.
func (c *Command) InitDefaultHelpCmd() {
	if c.helpCommand == nil {
		c.helpCommand = &Command{
			Use:   "help [command]",
			Short: "Help about any command",
			Run: func(c *Command, args []string) {
				c.Usage()
			},
		}
	}
	c.commands = append(c.commands, c.helpCommand)
}
""",
    "active_help.go": """package cli

import (
	"os"
	"strings"
)

// AppendActiveHelp adds the string to the completions, to be shown as active help.
// Active help strings are added to the array of completions and shown to the user
// when completion is triggered; call it before or after the completions are added.
func AppendActiveHelp(completions []string, help string) []string {
	return append(completions, activeHelpMarker+help)
}

// activeHelpEnvVar returns the name of the program's environment variable for active help:
// the program name in upper case, with every other character than letters and digits replaced.
func activeHelpEnvVar(name string) string {
	upper := strings.ToUpper(name)
	upper = strings.ReplaceAll(upper, "-", "_")
	return upper + "_" + activeHelpEnvVarSuffix
}

// GetActiveHelpConfig gets the active help setting of the command from its environment variable.
func GetActiveHelpConfig(cmd *Command) string {
	return os.Getenv(activeHelpEnvVar(cmd.Use))
}
""",
}


def test_one_word_of_a_compound_file_name_does_not_name_it(tmp_path: Path, shared_embedder: Embedder) -> None:
    """Before, `active_help.go` gained half the file-name weight from "help", the passive's "get" found
    every getter (`GetActiveHelpConfig`) and `Cmd` was not "command": both active-help functions
    ranked above the function that adds the help command, which fell out of the top 3 (on
    spf13/cobra it was 4th, under `active_help.go`)."""
    root = write_repo(tmp_path / "cli-repo", _HELP_COMMAND)
    store = Store(tmp_path / "home")
    index = store.open(ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder).repo_id)
    hits = Retriever(index, shared_embedder).search("How does the help command get added?", 3, explain=True)
    symbols = [hit.symbol for hit in hits]
    assert "Command.InitDefaultHelpCmd" in symbols, symbols
    adds = hits[symbols.index("Command.InitDefaultHelpCmd")]
    assert adds.explain is not None and adds.explain["name_weight"] == pytest.approx(1.15), "help, cmd"
    active = [hit for hit in hits if hit.path == "active_help.go"]
    assert all(hits.index(hit) > hits.index(adds) for hit in active)
    assert all(hit.explain is not None and "path_weight" not in hit.explain for hit in active)


@pytest.mark.parametrize(
    ("path", "question", "named"),
    [
        ("active_help.go", "how does the help command get added?", False),
        ("help.go", "how does the help command get added?", True),
        ("axum/src/routing/path_router.rs", "how does the router match a request path?", True),
        ("examples/session/index.js", "example of keeping user sessions", True),
        ("anyio/to_process.py", "call a function in a worker process", True),
        ("fsspec/_concurrency_utils.py", "run coroutines with limited concurrency", True),
        ("cmd.go", "where is the command parsed?", True),
        ("utils.py", "where are the utils?", False),
    ],
)
def test_a_file_is_named_when_its_whole_topic_is_said(path: str, question: str, named: bool) -> None:
    assert names_the_file(path, frozenset(query_terms(question))) is named


def test_a_short_form_in_a_name_counts_as_the_word_it_stands_for() -> None:
    terms = frozenset(query_terms("how does the help command get added?"))
    assert named_share("Command.InitDefaultHelpCmd", terms) == 0.5
    assert named_share("Context.ctxValue", frozenset(query_terms("the context value"))) == 1.0


@pytest.mark.parametrize(
    ("question", "terms"),
    [
        ("How does the help command get added?", ["help", "command", "add"]),
        ("does it get called twice?", ["call", "twice"]),
        ("how do I get cached values?", ["get", "cach", "valu"]),
        ("how to get parsed headers", ["get", "pars", "header"]),
        ("how do I get the value", ["get", "valu"]),
    ],
)
def test_the_passive_get_is_no_query_term(question: str, terms: list[str]) -> None:
    assert query_terms(question) == terms


_MARKUP = {
    "docs/markup.md": """# Console markup

Markup is parsed by the `richtext.markup` module: square brackets open and close a style,
so `[bold]Hello[/bold]` prints Hello in bold. Escape a bracket with a backslash.
""",
    "richtext/markup.py": '''"""Console markup: square-bracketed tags that set styles."""

import re

TAG = re.compile(r"\\[(/?)([a-z ]+)\\]")


def parse(text):
    """Split marked-up text into (text, style) runs at each tag in square brackets."""
    runs, style, position = [], [], 0
    for match in TAG.finditer(text):
        runs.append((text[position : match.start()], " ".join(style)))
        if match.group(1):
            style.pop()
        else:
            style.append(match.group(2))
        position = match.end()
    runs.append((text[position:], " ".join(style)))
    return runs
''',
    "richtext/text.py": '''"""Styled text."""


class Text:
    """A string with styles."""

    def __init__(self, plain="", spans=None):
        self.plain = plain
        self.spans = spans or []

    @property
    def markup(self):
        """The text as console markup, each styled span inside its tag."""
        return "".join(f"[{style}]{part}[/{style}]" if style else part for part, style in self.spans)
''',
}


def test_a_module_named_in_the_docs_links_to_no_definition_of_its_last_name(
    tmp_path: Path, shared_embedder: Embedder
) -> None:
    """`richtext.markup` in the docs is the module, not `Text.markup`: before, the link went to the
    property, which outranked the parser for a question about parsing markup (rich: `markup.py`
    2nd under `Text.markup`)."""
    root = write_repo(tmp_path / "markup-repo", _MARKUP)
    store = Store(tmp_path / "home")
    index = store.open(ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder).repo_id)
    question = "how is console markup parsed into styles?"
    hits = Retriever(index, shared_embedder).search(question, 5, explain=True)
    assert hits[0].path == "richtext/markup.py", paths(hits)
    linked = [hit.explain.get("linked_name") for hit in hits if hit.explain is not None]
    assert "richtext.markup" not in linked
    assert module_names(["src/richtext/markup.py", "axum/src/routing/mod.rs", "README"]) == {
        "richtext.markup",
        "axum.routing",
    }


_DOCUMENTED_LIMITER = {
    "throttle/__init__.py": '''"""Throttling: how many requests a client may send each second.

Every client has its own allowance of requests each second, kept by a `TokenBucket`. Each request a
client sends spends one with `TokenBucket.take()`; a client that has spent its allowance for this
second must wait until it is refilled.
"""
''',
    "throttle/bucket.py": '''import time


class TokenBucket:
    def __init__(self, rate, burst):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self):
        """Spend a token on one request; False when none is left."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
''',
}


def test_a_source_chunk_of_comments_alone_plays_the_docs_role(
    tmp_path: Path, shared_embedder: Embedder
) -> None:
    """A package's docstring says the question's words; the code it describes does not. Weighed as
    code, the docstring came first; as docs it ranks below the code and links to it."""
    root = write_repo(tmp_path / "throttle-repo", _DOCUMENTED_LIMITER)
    store = Store(tmp_path / "home")
    index = store.open(ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder).repo_id)
    question = "how many requests can a client send each second before it must wait?"
    unranked = Retriever(index, shared_embedder, ranking=Ranking(roles=False, links=False))
    assert paths(unranked.search(question, 2))[0] == "throttle/__init__.py", "the fixture no longer tests it"
    first, second = Retriever(index, shared_embedder).search(question, 2, explain=True)
    assert first.path == "throttle/bucket.py"
    assert first.explain is not None and first.explain["linked_from"] == "throttle/__init__.py"
    assert second.explain is not None and second.explain["role"] == "docs"


@pytest.mark.parametrize(
    ("text", "language", "comments"),
    [
        ('"""Throttling.\n\nEach client has a bucket.\n"""\n', "python", True),
        ("# Copyright 2024\n# Licensed under MIT\n", "python", True),
        ('"""Throttling."""\n\nimport time\n', "python", False),
        (
            'class Timeout(RequestError):\n    """The request timed out."""\n\n\n'
            "class ReadTimeout(Timeout):\n    pass\n",
            "python",
            True,
        ),
        ('def take(self):\n    """Take a token."""\n    return self.tokens.pop()\n', "python", False),
        ("class Sized(Protocol):\n    def size(self) -> int: ...\n", "python", False),
        ("//! The crate's overview.\n//!\n//! # Example\n", "rust", True),
        ("    /// Take a token.\n    ///\n    /// ```\n    /// bucket.take();\n    /// ```\n", "rust", True),
        ("/// Take a token.\npub fn take(&mut self) -> bool {\n", "rust", False),
        ("/**\n * The router.\n * @param {string} path\n */\n", "javascript", True),
        ("/* a note */ const x = 1;\n", "javascript", False),
        ("// Package cobra is a commander.\npackage cobra\n", "go", False),
        ("#[derive(Clone)]\n", "rust", False),
        ("# Title\n\nProse.\n", "markdown", False),
        ("\n\n", "python", False),
    ],
)
def test_comment_only_knows_each_languages_comments(text: str, language: str, comments: bool) -> None:
    assert comment_only(text, language) is comments


def _function_with_notes() -> str:
    """A function whose body holds a block of notes longer than a chunk: the chunker cuts a chunk of
    comments alone out of it."""
    notes = "\n".join(
        f"    # note {n}: the ledger keeps every settled invoice until the auditor signs the quarter off"
        for n in range(60)
    )
    code = "\n".join(f"    total_{n} = ledger.settle(invoices[{n}])" for n in range(12))
    return f"def close_quarter(ledger, invoices):\n{code}\n{notes}\n{code}\n    return ledger\n"


def test_comments_inside_a_function_stay_its_code(tmp_path: Path, shared_embedder: Embedder) -> None:
    """Notes in a function's body explain that code: a chunk of them alone keeps the source role."""
    root = write_repo(tmp_path / "ledger-repo", {"books/ledger.py": _function_with_notes()})
    store = Store(tmp_path / "home")
    index = store.open(ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder).repo_id)
    alone = [c for c in index.chunks_for_file("books/ledger.py") if comment_only(c.text, c.language)]
    assert alone, "the fixture no longer cuts out a chunk of comments"
    # Only the notes say "auditor": every candidate of a keyword search is a chunk of comments.
    best = Retriever(index, None).search("when does the auditor sign off?", 1, mode="lexical", explain=True)
    assert best[0].explain is not None and best[0].explain["role"] == "source"


def _rust_bucket() -> str:
    """A Rust source file long enough to be cut into several chunks: the implementation, then an
    inline test module from line `_RUST_TESTS_FROM` on."""
    methods = "".join(
        f"""
    /// Refills {n} tokens, up to the capacity.
    pub fn refill_{n}(&mut self) {{
        self.tokens = (self.tokens + {n}).min(self.capacity);
        self.refills += 1;
        self.last = {n};
    }}
"""
        for n in range(1, 9)
    )
    tests = "".join(
        f"""
    #[test]
    fn take_refuses_once_the_bucket_is_empty_after_{n}() {{
        let mut bucket = Bucket::new({n});
        for _ in 0..{n} {{
            assert!(bucket.take());
        }}
        assert!(!bucket.take(), "an empty bucket refuses to take");
    }}
"""
        for n in range(1, 9)
    )
    head = f"""pub struct Bucket {{
    tokens: u32,
    capacity: u32,
    refills: u32,
    last: u32,
}}

impl Bucket {{
    /// A bucket holding `tokens` tokens.
    pub fn new(tokens: u32) -> Self {{
        Bucket {{ tokens, capacity: tokens, refills: 0, last: 0 }}
    }}

    /// Takes one token; false once the bucket is empty.
    pub fn take(&mut self) -> bool {{
        if self.tokens == 0 {{
            return false;
        }}
        self.tokens -= 1;
        true
    }}
{methods}}}

"""
    assert head.count("\n") + 1 == _RUST_TESTS_FROM
    return head + f"#[cfg(test)]\nmod tests {{\n    use super::*;\n{tests}}}\n"


_RUST_TESTS_FROM = 80
_RUST_BUCKET = {
    "Cargo.toml": '[package]\nname = "bucket"\nversion = "0.1.0"\n',
    "src/lib.rs": "pub mod bucket;\n",
    "src/bucket.rs": _rust_bucket(),
}


def test_a_rust_inline_test_module_plays_the_test_role_and_the_rest_of_its_file_source(
    tmp_path: Path, shared_embedder: Embedder
) -> None:
    """`#[cfg(test)] mod tests { ... }` inside a source file is test code, as a file under `tests/`
    is: its chunks play the test role (weighed as tests for a question about how code works); the
    implementation above it stays source."""
    root = write_repo(tmp_path / "bucket-repo", _RUST_BUCKET)
    store = Store(tmp_path / "home")
    index = store.open(ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder).repo_id)
    assert index.file_role("src/bucket.rs") == "source"
    retriever = Retriever(index, shared_embedder)
    (test,) = retriever.search(
        "which test checks that take refuses once the bucket is empty?", 1, explain=True
    )
    assert test.explain is not None and test.explain["role"] == "test"
    assert test.symbol is not None and test.symbol.startswith("tests.take_refuses")
    (code,) = retriever.search("how does take refuse once the bucket is empty?", 1, explain=True)
    assert code.explain is not None and code.explain["role"] == "source"
    assert code.symbol == "Bucket.take"


def test_inline_test_modules_are_found_by_their_braces_in_rust_files_only() -> None:
    text = _RUST_BUCKET["src/bucket.rs"]
    last = text.count("\n")
    assert inline_test_modules("src/bucket.rs", text) == [(_RUST_TESTS_FROM, last)]
    assert inline_test_modules("src/bucket.py", text) == []
    assert inline_test_modules("src/lib.rs", "#[cfg(test)]\nmod tests;\n") == []
    assert mostly_within(21, 31, [(21, 31)]) and mostly_within(15, 31, [(21, 31)])
    assert not mostly_within(5, 22, [(21, 31)])


def test_only_a_file_that_can_hold_inline_tests_is_read_for_its_role(
    tmp_path: Path, shared_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding a source chunk's inline test modules reads its file's whole text (a SQLite read); a
    Python, Go or JS file holds none, so a search reads none of them for it."""
    script = (
        "def take_or_refuse(bucket):\n"
        "    '''Take a token; refuse once the bucket is empty.'''\n"
        "    return bucket.take()\n"
    )
    root = write_repo(tmp_path / "bucket-repo", {**_RUST_BUCKET, "tools/take.py": script})
    store = Store(tmp_path / "home")
    index = store.open(ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder).repo_id)
    read: list[str] = []
    file_text = index.file_text
    monkeypatch.setattr(index, "file_text", lambda path: read.append(path) or file_text(path))
    hits = Retriever(index, shared_embedder).search("how does take refuse once the bucket is empty?", 10)
    assert {"tools/take.py", "src/bucket.rs"} <= {hit.path for hit in hits}
    assert read and set(read) <= {"src/bucket.rs", "src/lib.rs"}
