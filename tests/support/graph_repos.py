"""Small repositories whose call chains cross files: Python (through an import and `self.`) and
Go (through a package import and a method on a receiver), with a subclass override in each; and
JavaScript constructors (a class and a constructor function) storing their arguments on `this`."""

from __future__ import annotations

from pathlib import Path

from tests.support.repos import commit_all, git, write_files

PYTHON_FILES = {
    "shop/cli.py": '''"""Command line entry point."""
from shop.service import CheckoutService


def main(argv):
    service = CheckoutService(argv[0])
    return service.checkout(argv[1:])
''',
    "shop/service.py": '''"""The checkout service."""
from shop import payments


class CheckoutService:
    def __init__(self, currency):
        self.currency = currency

    def checkout(self, items):
        total = self.total(items)
        return self.charge(total)

    def total(self, items):
        return sum(items)

    def charge(self, amount):
        gateway = payments.make_gateway(self.currency)
        return gateway.capture_payment(amount)
''',
    "shop/payments.py": '''"""Payment gateways."""


class Gateway:
    def capture_payment(self, amount):
        raise NotImplementedError


class CardGateway(Gateway):
    def capture_payment(self, amount):
        return {"captured": amount, "via": "card"}


def make_gateway(currency):
    return CardGateway()
''',
    "README.md": "# shop\n\nA tiny shop. `main` checks out through `CheckoutService`.\n",
}

GO_FILES = {
    "go.mod": "module example.com/relay\n\ngo 1.21\n",
    "cmd/relay/main.go": """package main

import (
	"os"

	"example.com/relay/server"
)

func main() {
	srv := server.New(os.Args[1])
	srv.Start()
}
""",
    "server/server.go": """package server

type Server struct {
	addr string
}

func New(addr string) *Server {
	return &Server{addr: addr}
}

func (s *Server) Start() {
	s.listen()
}

func (s *Server) listen() {
	openSocket(s.addr)
}
""",
    "server/socket.go": """package server

func openSocket(addr string) int {
	return len(addr)
}
""",
}

JS_FILES = {
    "package.json": '{"name": "fetcher", "main": "lib/index.js"}\n',
    "lib/client.js": """'use strict';
var transport = require('./transport');

class Client {
  constructor(timeout, { retries = 2 } = {}) {
    this.timeout = timeout;
    this.retries = retries;
    this.pending = [];
  }

  send(request) {
    return transport.deliver(request, this.timeout);
  }
}

module.exports = Client;
""",
    "lib/route.js": """'use strict';

function Route(path) {
  this.path = path;
  this.stack = [];
}

Route.prototype.match = function match(url) {
  return url === this.path;
};

module.exports = Route;
""",
    "lib/transport.js": """'use strict';

exports.deliver = function deliver(request, timeout) {
  return { request: request, timeout: timeout };
};
""",
}


def make_repo(dest: Path, files: dict[str, str]) -> Path:
    dest.mkdir(parents=True)
    git(dest, "init", "-q", "-b", "main")
    write_files(dest, files)
    commit_all(dest, "initial")
    return dest


# A Rust router whose `route` is called by an inline test module (`#[cfg(test)] mod tests { ... }`) and
# by the code that serves a request; the failure it reports is an exception-like error type.
RUST_FILES = {
    "Cargo.toml": '[package]\nname = "router"\nversion = "0.1.0"\n',
    "src/lib.rs": "pub mod router;\npub mod serve;\n",
    "src/router.rs": """use crate::serve::RouteError;

pub struct Router {
    routes: Vec<String>,
}

impl Router {
    pub fn new() -> Self {
        Router { routes: Vec::new() }
    }

    pub fn route(mut self, path: &str) -> Result<Self, RouteError> {
        if path.is_empty() {
            return Err(RouteError::new());
        }
        self.routes.push(normalize_route_path(path));
        Ok(self)
    }
}

fn normalize_route_path(path: &str) -> String {
    path.trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_a_route_to_the_router_keeps_its_path() {
        let router = Router::new().route("/users/").unwrap();
        assert_eq!(router.routes, vec!["/users"]);
    }
}
""",
    "src/serve.rs": """use crate::router::Router;

pub struct RouteError {}

impl RouteError {
    pub fn new() -> Self {
        RouteError {}
    }
}

pub fn app() -> Router {
    Router::new().route("/health").ok().unwrap()
}
""",
}


# A file server class, retrieved as one class-sized hit: the question's terms are spread over its methods'
# names and bodies, the method that does what is asked (`respond`) is not the first one `__call__` calls,
# the one it names in a merged span (`Index.lookup`) is not the span's longest, and a chain that ends where
# a class is built (`attach` -> `Download`) goes on to the method that does what is asked.
SERVER_FILES = {
    "server/files.py": '''"""Serving files from a directory."""
import os


class NotFound(Exception):
    """No file for the request."""


class FileServer:
    """An application serving the files under `root`."""

    def __init__(self, root):
        self.root = root

    def __call__(self, request):
        path = self.clean_path(request)
        return self.respond(path, request)

    def clean_path(self, request):
        return request.path.strip("/")

    def respond(self, path, request):
        """Find the file for the request path and serve it: its bytes, or 404."""
        found = self.locate(path)
        if found is None:
            return 404
        return self.read_bytes(found)

    def locate(self, name):
        full = os.path.join(self.root, name)
        return full if os.path.exists(full) else None

    def read_bytes(self, full):
        with open(full, "rb") as handle:
            return handle.read()
''',
    "server/download.py": '''"""Attachments."""


class Download:
    """A file sent to the client as an attachment."""

    def __init__(self, full):
        self.full = full

    def headers(self):
        return {"content-disposition": "attachment"}

    def __call__(self, send):
        """Send the file's bytes to the client."""
        with open(self.full, "rb") as handle:
            send(handle.read())


def attach(full):
    return Download(full)
''',
    "server/index.py": '''"""An index of names."""


class Index:
    def __init__(self, names):
        self.names = names
        self.size = len(names)
        self.sorted = sorted(names)
        self.first = self.sorted[0] if self.sorted else None
        self.last = self.sorted[-1] if self.sorted else None

    def lookup(self, name):
        return self.position(name) >= 0

    def position(self, name):
        return self.sorted.index(name) if name in self.names else -1


def has_name(index, name):
    return index.lookup(name)
''',
}


# A command-line parser in Go: `ExecuteC` runs the subcommand `Find` picks from the arguments, and first
# calls `initCompleteCmd` (another file), which calls `Find` too, only to check for a completion request.
CLI_FILES = {
    "go.mod": "module example.com/cli\n\ngo 1.21\n",
    "command.go": """package cli

// Command is one command of the program, with its subcommands.
type Command struct {
	Name     string
	Run      func(args []string)
	children []*Command
}

// Execute runs the program's command line.
func (c *Command) Execute(args []string) error {
	_, err := c.ExecuteC(args)
	return err
}

// ExecuteC runs the subcommand the arguments name, and returns it.
func (c *Command) ExecuteC(args []string) (*Command, error) {
	c.initCompleteCmd(args)
	cmd, rest := c.Find(args)
	cmd.Run(rest)
	return cmd, nil
}

// Find finds the subcommand to run: it walks the children, one argument at a time.
func (c *Command) Find(args []string) (*Command, []string) {
	cmd := c
	for len(args) > 0 {
		next := cmd.child(args[0])
		if next == nil {
			break
		}
		cmd, args = next, args[1:]
	}
	return cmd, args
}

func (c *Command) child(name string) *Command {
	for _, sub := range c.children {
		if sub.Name == name {
			return sub
		}
	}
	return nil
}
""",
    "completions.go": """package cli

// initCompleteCmd adds the hidden command the shell runs to complete a command line's args, unless
// the args already find it.
func (c *Command) initCompleteCmd(args []string) {
	found, _ := c.Find(args)
	if found.Name == "__complete" {
		return
	}
	c.children = append(c.children, &Command{Name: "__complete", Run: func(line []string) {}})
}
""",
}


# A JavaScript response object whose `send` is called by two helpers that explain the question equally
# (`jsonp`: set, type; `sendStatus`: body, content; `send` itself holds both): the chains `jsonp -> send`
# and `sendStatus -> send` score the same, so only a tie-break decides between them.
TIE_FILES = {
    "package.json": '{"name": "reply", "main": "lib/reply.js"}\n',
    "lib/reply.js": """'use strict';

var res = module.exports = {};

/**
 * Send a response body.
 */
res.send = function send(body) {
  // set the content type of a string body before sending it
  var chunk = body;
  if (typeof chunk === 'string') {
    this.kind = 'html';
  }
  this.end(chunk);
  return this;
};

/**
 * Send an object as JavaScript.
 */
res.jsonp = function jsonp(obj) {
  var text = JSON.stringify(obj);
  this.set('X-Type', 'text/javascript');
  return this.send(text);
};

/**
 * Send a status code with its text.
 */
res.sendStatus = function sendStatus(code) {
  // the status text is all the content
  var body = String(code);
  this.statusCode = code;
  return this.send(body);
};
""",
}

# A middleware whose entry point does the work: `SessionMiddleware.__call__` loads the session from the
# cookie, then calls on to `Connection.session`, a one-line accessor.
SESSION_FILES = {
    "web/sessions.py": '''"""Sessions kept in the request's cookie."""
from web.requests import Connection


class SessionMiddleware:
    """Loads the session from the request's cookie before the app runs."""

    def __init__(self, app):
        self.app = app

    def __call__(self, scope):
        """Load the session from the cookie, or start an empty one."""
        cookie = scope.get("cookie", "")
        scope["session"] = self.decode(cookie) if cookie else {}
        return self.app(Connection(scope).session())

    def decode(self, cookie):
        return dict(item.split("=") for item in cookie.split(";"))
''',
    "web/requests.py": '''"""The request's view of its scope."""


class Connection:
    def __init__(self, scope):
        self.scope = scope

    def session(self):
        return self.scope["session"]
''',
}

# A command that runs its hooks: `Command.execute` calls the two small hook runners, whose names hold the
# question's words.
HOOK_FILES = {
    "app/command.py": '''"""Running a command with its hooks."""

INITIALIZERS = []
FINALIZERS = []


class Command:
    def __init__(self, run):
        self.run = run

    def execute(self, args):
        """Run the pre-run hooks, the command itself, then the post-run hooks."""
        self.pre_run()
        result = self.run(args)
        self.post_run()
        return result

    def pre_run(self):
        for hook in INITIALIZERS:
            hook()

    def post_run(self):
        for hook in FINALIZERS:
            hook()


def main(argv):
    return Command(print).execute(argv)
''',
}

# A WebSocket chat endpoint in the style of deepwiki-open's `handle_websocket_chat`: the handler builds
# the prompt itself, in its own lines, and only calls on to the `RAG` class and a small formatter.
CHAT_FILES = {
    "server/chat.py": '''"""The WebSocket chat endpoint."""
from server.prompts import format_history
from server.rag import RAG


async def handle_websocket_chat(websocket):
    """Answer one chat request over the WebSocket: retrieve, build the prompt, stream the reply."""
    request = await websocket.receive_json()
    rag = RAG(request["provider"])
    documents = rag.retrieve(request["query"])
    context = "\\n\\n".join(document["text"] for document in documents)
    history = format_history(request.get("messages", []))
    system_prompt = f"<role>You answer questions about {request['repo']}.</role>"
    prompt = f"{system_prompt}\\n\\n<history>\\n{history}</history>\\n\\n"
    prompt += f"<context>\\n{context}\\n</context>\\n\\n<query>\\n{request['query']}\\n</query>"
    async for text in rag.generate(prompt):
        await websocket.send_text(text)
''',
    "server/rag.py": '''"""Retrieval-augmented generation over an indexed repository."""


class RAG:
    def __init__(self, provider):
        self.provider = provider
        self.documents = []

    def retrieve(self, query):
        return [document for document in self.documents if query in document["text"]]

    async def generate(self, prompt):
        yield f"{self.provider}: {prompt[:20]}"
''',
    "server/prompts.py": '''"""Pieces of the chat prompt."""


def format_history(messages):
    return "".join(f"{message['role']}: {message['content']}\\n" for message in messages)
''',
}

# Installing a traceback hook, and a logging handler that renders tracebacks: the handler's path holds
# more of "How does fancy install its traceback handler?" across its steps than `install` alone.
HOOK_INSTALL_FILES = {
    "fancy/traceback.py": '''"""Tracebacks drawn with colours."""
import sys


class Traceback:
    def __init__(self, frames):
        self.frames = frames

    @classmethod
    def from_exception(cls, kind, value, tb):
        """A traceback built from the exception being handled."""
        return cls([kind, value, tb])


def install(width=100):
    """Replace sys.excepthook, so every uncaught exception is printed with colours."""
    previous = sys.excepthook

    def excepthook(kind, value, tb):
        print("\\n".join(str(frame)[:width] for frame in (kind, value, tb)))

    sys.excepthook = excepthook
    return previous
''',
    "fancy/logging.py": '''"""A logging handler for fancy output."""
import logging

from fancy.traceback import Traceback


class FancyHandler(logging.Handler):
    def emit(self, record):
        if record.exc_info:
            print(Traceback.from_exception(*record.exc_info).frames)
        print(record.getMessage())
''',
}

# A request's form, parsed by one of two parsers: `FormParser` (its name says "form") or
# `MultiPartParser` (its name says "multipart" split at a capital) for a multipart body.
FORM_FILES = {
    "web/forms.py": '''"""Form bodies."""


class FormParser:
    def __init__(self, body):
        self.body = body

    def parse(self):
        """Parse the url-encoded form fields of the body."""
        return dict(pair.split("=") for pair in self.body.split("&"))


class MultiPartParser:
    def __init__(self, body, boundary):
        self.body = body
        self.boundary = boundary

    def parse(self):
        """Split the body at each boundary."""
        items = {}
        for part in self.body.split(self.boundary):
            name, _, value = part.partition("\\n\\n")
            items[name.strip()] = value
        return items
''',
    "web/request.py": '''"""An incoming request."""
from web.forms import FormParser, MultiPartParser


class Request:
    def __init__(self, content_type, body):
        self.content_type = content_type
        self.body = body

    def form(self):
        if self.content_type.startswith("multipart/form-data"):
            boundary = self.content_type.split("boundary=")[1]
            return MultiPartParser(self.body, boundary).parse()
        return FormParser(self.body).parse()
''',
}


# A JavaScript package in the shape of express: `tiny()` is `createApplication` in lib/tiny.js, which
# calls `app.init` in lib/application.js; its many examples and tests each bind the package
# (`var tiny = require('../..')`) and call `tiny()`, as every express example does.
PACKAGE_FILES = {
    "package.json": '{"name": "tiny", "main": "index.js"}\n',
    "index.js": "'use strict';\n\nmodule.exports = require('./lib/tiny');\n",
    "lib/tiny.js": """'use strict';

var proto = require('./application');

exports = module.exports = createApplication;

/**
 * Create an application: a request handler with the application's methods.
 */
function createApplication() {
  var app = function (req, res, next) {
    app.handle(req, res, next);
  };
  Object.assign(app, proto);
  app.init();
  return app;
}
""",
    "lib/application.js": """'use strict';

var app = exports = module.exports = {};

/**
 * Initialize the application: its settings and their defaults.
 */
app.init = function init() {
  this.settings = {};
  this.defaultConfiguration();
};

app.defaultConfiguration = function defaultConfiguration() {
  this.settings.env = process.env.NODE_ENV || 'development';
  this.settings['x-powered-by'] = true;
};

app.handle = function handle(req, res, next) {
  next();
};
""",
    **{
        f"examples/{name}/index.js": f"""'use strict';

var tiny = require('../..');

var app = module.exports = tiny();

app.handle('/{name}', function (req, res) {{
  res.end('the {name} example');
}});
"""
        for name in [f"demo{number}" for number in range(24)]
    },
    **{
        f"test/app.{name}.js": f"""'use strict';

var tiny = require('..');

describe('app.{name}', function () {{
  it('should create an application', function () {{
    var app = tiny();
    app.handle('/{name}');
  }});
}});
"""
        for name in [f"case{number}" for number in range(12)]
    },
}
