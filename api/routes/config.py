"""Configuration routes: `/health`, `/api/models`, and deepwiki-open's `/models/config` and `/lang/config`.

The deepwiki-shaped routes let its front end (which reads them on load) talk to RepoLens unchanged;
`/api/models` is our richer listing, which also says which providers are configured.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from api.services import Services, get_services
from rag.prompt import DEFAULT_LANGUAGE, LANGUAGES
from rag.providers.catalog import default_provider, list_providers

router = APIRouter()
ServicesDep = Annotated[Services, Depends(get_services)]


@router.get("/health")
def health() -> dict[str, str]:
    """Cheap on purpose (no disk, no model): load balancers poll it."""
    return {"status": "healthy", "service": "repolens", "timestamp": datetime.now(UTC).isoformat()}


@router.get("/api/models")
def models(services: ServicesDep) -> dict[str, Any]:
    settings = services.settings
    return {"default_provider": default_provider(settings), "providers": list_providers(settings)}


@router.get("/models/config")
def models_config(services: ServicesDep) -> dict[str, Any]:
    """deepwiki-open's shape. The default, then the other configured providers come first, so its
    picker offers a working one."""
    providers = sorted(
        list_providers(services.settings), key=lambda entry: (not entry["default"], not entry["configured"])
    )
    return {
        "providers": [
            {
                "id": entry["id"],
                "name": entry["name"],
                "models": [{"id": model["id"], "name": model["name"]} for model in entry["models"]],
                "supportsCustomModel": entry["supports_custom_model"],
            }
            for entry in providers
        ],
        "defaultProvider": default_provider(services.settings),
    }


@router.get("/lang/config")
def lang_config() -> dict[str, Any]:
    return {"supported_languages": LANGUAGES, "default": DEFAULT_LANGUAGE}
