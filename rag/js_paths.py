"""Where a JavaScript or TypeScript import points: relative specifiers, and the aliases of a
`tsconfig.json` / `jsconfig.json` (`compilerOptions.paths` and `baseUrl`).

Next.js, Vite and most TypeScript projects import their own code through an alias (`@/utils/x`
for `src/utils/x.ts`); without the config the code graph saw none of those imports.
`extends` is not followed, and package specifiers (`react`) resolve only through an alias.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

SUFFIXES = ("", ".js", ".ts", ".tsx", ".mjs", ".cjs", ".jsx", "/index.js", "/index.ts", "/index.tsx")
CONFIG_NAMES = ("tsconfig.json", "jsconfig.json")
# JSON with comments and trailing commas, as TypeScript reads it. A string is kept whole (it may
# hold `//`, as a URL does); an unclosed block comment runs to the end, so no start is rescanned.
_COMMENT_OR_STRING = re.compile(r'("(?:\\.|[^"\\\n])*+")|//[^\n]*+|/\*[\s\S]*?(?:\*/|\Z)')
_TRAILING_COMMA = re.compile(r",(\s*+[}\]])")


@dataclass(frozen=True, slots=True)
class JsConfig:
    """The import aliases a config gives the files under its folder."""

    folder: str  # "" for the repository's root
    base: str  # `baseUrl` joined to the folder: where aliases and bare specifiers start
    paths: dict[str, list[str]] = field(default_factory=dict)
    has_base_url: bool = False

    def covers(self, path: str) -> bool:
        return not self.folder or path.startswith(self.folder + "/")

    def stems(self, module: str) -> list[str]:
        """The paths (without suffix) `module` may mean under this config, most specific alias first."""
        found = []
        for pattern in sorted(self.paths, key=lambda p: -len(p.split("*", 1)[0])):
            prefix, star, suffix = pattern.partition("*")
            fits = len(module) >= len(prefix) + len(suffix)
            if star and fits and module.startswith(prefix) and module.endswith(suffix):
                rest = module[len(prefix) : len(module) - len(suffix)]
                found += [target.replace("*", rest, 1) for target in self.paths[pattern]]
            elif not star and module == pattern:
                found += self.paths[pattern]
        if self.has_base_url:
            found.append(module)
        return [posixpath.normpath(posixpath.join(self.base, stem)) for stem in found]


def parse_config(path: str, text: str) -> JsConfig | None:
    """The aliases of one config file, or None if it has none (or is not JSON even with comments)."""
    try:
        data = json.loads(_TRAILING_COMMA.sub(r"\1", _COMMENT_OR_STRING.sub(_keep_strings, text)))
    except ValueError:
        return None
    options = data.get("compilerOptions") if isinstance(data, dict) else None
    if not isinstance(options, dict):
        return None
    base_url = options.get("baseUrl")
    raw_paths = options.get("paths")
    paths = {
        str(pattern): [str(target) for target in targets if isinstance(target, str)]
        for pattern, targets in (raw_paths.items() if isinstance(raw_paths, dict) else ())
        if isinstance(targets, list)
    }
    if not paths and not isinstance(base_url, str):
        return None
    folder = posixpath.dirname(path)
    base = posixpath.normpath(posixpath.join(folder, base_url if isinstance(base_url, str) else "."))
    return JsConfig(folder, "" if base == "." else base, paths, isinstance(base_url, str))


def _keep_strings(match: re.Match[str]) -> str:
    string: str = match.group(1) or ""
    return string


def nearest_first(configs: Sequence[JsConfig]) -> list[JsConfig]:
    """Configs ordered so that the first one covering a file is the nearest to it."""
    return sorted(configs, key=lambda config: (-_depth(config.folder), config.folder))


def _depth(folder: str) -> int:
    return len(folder.split("/")) if folder else 0


def module_target(
    path: str, module: str, configs: Sequence[JsConfig], exists: Callable[[str], bool]
) -> str | None:
    """The indexed file `module`, imported from `path`, names: relative to `path`, or through the
    nearest config's aliases (`configs` as `nearest_first` orders them)."""
    if module.startswith("."):
        stems = [posixpath.normpath(posixpath.join(posixpath.dirname(path), module))]
    else:
        config = next((config for config in configs if config.covers(path)), None)
        stems = config.stems(module) if config is not None else []
    for stem in stems:
        for suffix in SUFFIXES:
            if exists(stem + suffix):
                return stem + suffix
    return None


def load_configs(paths: Sequence[str], read: Callable[[str], str | None]) -> list[JsConfig]:
    """Every alias-giving config among `paths` (read with `read`), nearest first."""
    configs = []
    for path in paths:
        if posixpath.basename(path) in CONFIG_NAMES:
            text = read(path)
            config = parse_config(path, text) if text else None
            if config is not None:
                configs.append(config)
    return nearest_first(configs)
