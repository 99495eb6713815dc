"""Which browser pages may drive the chat endpoints.

WebSockets are not covered by CORS: without a check, any web site the user visits could open
`ws://127.0.0.1:8000/ws/chat`, index folders of the user's disk (`type: "local"`) and read
private repositories through the answers. Browsers always send `Origin`, so requests from
other sites are refused unless the site is listed in `REPOLENS_ALLOWED_ORIGINS`
(comma-separated origins, or `*`). Same-origin pages (the built-in web page), pages served
from the loopback interface (e.g. a deepwiki-open front end on `http://localhost:3000`) and
clients that send no `Origin` (scripts, the CLI, curl) are allowed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from api.hosts import LOOPBACK_HOSTS, allowed_hosts, host_matches
from rag.settings import Settings

ALLOWED_ORIGINS_VARIABLE = "REPOLENS_ALLOWED_ORIGINS"


def origin_allowed(origin: str | None, host: str | None, settings: Settings) -> bool:
    if origin is None:
        return True
    configured = {item.strip().rstrip("/") for item in settings.allowed_origins.split(",")}
    if "*" in configured or origin.rstrip("/") in configured:
        return True
    # Same-origin only from a host this server serves: `Host` itself is attacker-chosen under DNS
    # rebinding, so `Origin == Host` alone proves nothing (the Host check runs first, in api.hosts).
    hostname = urlsplit(origin).hostname or ""
    return hostname in LOOPBACK_HOSTS or host_matches(hostname, allowed_hosts(settings))


def refusal(origin: str) -> str:
    return f"origin {origin} may not use this server: add it to {ALLOWED_ORIGINS_VARIABLE} to allow it"
