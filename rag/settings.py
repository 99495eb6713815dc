"""Runtime configuration, read once from the environment (and a `.env` file if present).

deepwiki-open's variable names are honoured so its users can reuse their `.env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


def _load_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {key: value for key, value in dotenv_values(path).items() if value is not None}


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the embedded offline defaults."""

    home: Path
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
        """Process environment wins over `.env` (read from the current directory by default)."""
        merged = dict(_load_dotenv(dotenv or Path.cwd() / ".env"))
        merged.update(os.environ if environ is None else environ)
        home = Path(merged.get("REPOLENS_HOME") or Path.home() / ".repolens").expanduser()
        return cls(home=home, env=merged)

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.env.get(name)
        return value if value else default

    @property
    def port(self) -> int:
        return int(self.get("PORT", "8000") or 8000)

    @property
    def host(self) -> str:
        return self.get("REPOLENS_HOST", "127.0.0.1") or "127.0.0.1"
