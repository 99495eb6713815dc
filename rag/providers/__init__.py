"""LLM providers behind one streaming interface; see `base` for the contract and `catalog` for the list."""

from rag.providers.base import (
    ChatProvider,
    ChatRequest,
    Message,
    ProviderError,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from rag.providers.catalog import PROVIDERS, default_provider, get_provider, list_providers, resolve_model

__all__ = [
    "PROVIDERS",
    "ChatProvider",
    "ChatRequest",
    "Message",
    "ProviderError",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallEvent",
    "ToolSpec",
    "Usage",
    "default_provider",
    "get_provider",
    "list_providers",
    "resolve_model",
]
