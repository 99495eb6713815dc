"""Import aliases of tsconfig.json / jsconfig.json: parsed as TypeScript reads them, matched as it does."""

from __future__ import annotations

from rag.js_paths import load_configs, module_target, parse_config

FILES = {"src/utils/url.ts", "src/lib/index.ts", "src/components/Button.tsx", "web/lib/x.js", "web/app.js"}


def _target(path: str, module: str, configs: dict[str, str]) -> str | None:
    return module_target(path, module, load_configs(list(configs), configs.get), FILES.__contains__)


def test_comments_trailing_commas_and_urls_in_strings() -> None:
    text = (
        '{ // c\n "compilerOptions": { /* b */ "baseUrl": "src", '
        '"paths": {"#/*": ["lib/*",],}, "x": "a//b" },\n}'
    )
    config = parse_config("tsconfig.json", text)
    assert config is not None and config.base == "src" and config.paths == {"#/*": ["lib/*"]}
    assert parse_config("tsconfig.json", "{not json") is None
    assert parse_config("tsconfig.json", '{"compilerOptions": {"strict": true}}') is None


def test_aliases_base_url_and_relative_imports() -> None:
    configs = {"tsconfig.json": '{"compilerOptions": {"baseUrl": "src", "paths": {"@/*": ["*"]}}}'}
    assert _target("src/app/page.tsx", "@/utils/url", configs) == "src/utils/url.ts"
    assert _target("src/app/page.tsx", "components/Button", configs) == "src/components/Button.tsx"
    assert _target("src/app/page.tsx", "../lib", configs) == "src/lib/index.ts"
    assert _target("src/app/page.tsx", "react", configs) is None


def test_the_nearest_config_covers_a_file() -> None:
    configs = {
        "tsconfig.json": '{"compilerOptions": {"paths": {"@/*": ["./src/*"]}}}',
        "web/jsconfig.json": '{"compilerOptions": {"paths": {"@/*": ["./lib/*"]}}}',
    }
    assert _target("web/app.js", "@/x", configs) == "web/lib/x.js"
    assert _target("src/app/page.tsx", "@/lib", configs) == "src/lib/index.ts"
    assert _target("other/a.ts", "@/x", {"web/jsconfig.json": configs["web/jsconfig.json"]}) is None
