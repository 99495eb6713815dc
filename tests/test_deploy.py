"""The team deployment files (deploy/, docs/deploy.md) stay true to the code: the compose file parses,
names the five services, and every RepoLens setting and command it uses exists."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from api.cli import app
from rag.settings import Settings, variable_of

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
VARIABLES = {variable_of(field) for field in Settings.model_fields.values()}


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_the_compose_file_has_every_service_with_a_health_check() -> None:
    services = _compose()["services"]
    assert set(services) == {"api", "worker", "lb", "redis", "postgres"}
    for name in ("api", "worker", "redis", "postgres"):
        assert services[name]["healthcheck"]["test"], name
    assert services["worker"]["command"][:2] == ["repolens", "worker"]
    assert services["worker"]["healthcheck"]["test"][1:] == ["repolens", "worker", "--check"]


def test_every_setting_the_deployment_names_is_a_real_setting() -> None:
    compose = _compose()
    named = set(compose["x-repolens"]["environment"])
    example = (DEPLOY / "env.example").read_text(encoding="utf-8")
    named |= set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.MULTILINE)) - {"POSTGRES_PASSWORD"}
    docs = (DEPLOY.parent / "docs" / "deploy.md").read_text(encoding="utf-8")
    named |= set(re.findall(r"`(REPOLENS_[A-Z0-9_]+)`", docs))
    assert named - VARIABLES == set()


def test_the_commands_the_deployment_runs_exist() -> None:
    commands = {command.name or command.callback.__name__ for command in app.registered_commands}
    assert {"serve", "worker", "doctor", "migrate-store"} <= commands
