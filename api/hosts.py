"""Which `Host` names the server answers to, and which browser origins count as its own.

A DNS-rebinding page (`http://evil.example:8000`, whose name now resolves to 127.0.0.1) sends
`Host: evil.example:8000` and `Origin: http://evil.example:8000`: same-origin from the
browser's point of view. So `Host` is checked first (Starlette's `TrustedHostMiddleware`,
installed by `api.app.create_app`) against the loopback names, the address the server is bound
to, and `REPOLENS_ALLOWED_HOSTS`; and an `Origin` is the server's own only when its host is one
of those allowed hosts.
"""

from __future__ import annotations

import re
import urllib.parse

from rag.settings import Settings

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
# Addresses that mean "every interface": the clients' Host is then unknown until configured.
_WILDCARD_BINDS = ("0.0.0.0", "::", "")
# A Host header is a name or an address, an optional port, nothing else (no path, user, space).
_HOST_HEADER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?")


def allowed_hosts(settings: Settings, bound_host: str | None = None) -> list[str]:
    """Host patterns (Starlette syntax: exact names, `*.example.com`, or `*`) this server serves."""
    hosts = list(LOOPBACK_HOSTS)
    bound = (bound_host if bound_host is not None else settings.host).strip().strip("[]").lower()
    if bound not in _WILDCARD_BINDS and bound not in hosts:
        hosts.append(bound)
    hosts += [item.strip().lower() for item in settings.allowed_hosts.split(",") if item.strip()]
    return hosts


def host_matches(host: str, patterns: list[str]) -> bool:
    host = host.strip("[]").lower()
    return any(
        pattern == "*" or host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
        for pattern in patterns
    )


def host_header_allowed(header: str | None, patterns: list[str]) -> bool:
    """True when a request's `Host` header (`name[:port]`, `[v6]:port`) names an allowed host;
    a missing or malformed header never is."""
    if not header or not _HOST_HEADER.fullmatch(header):
        return False
    name = urllib.parse.urlsplit(f"//{header}").hostname
    return name is not None and name != "" and host_matches(name, patterns)
