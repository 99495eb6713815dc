"""Which sources a *server* lets its clients name: local folders and hosts.

`repolens serve` is reachable by clients that do not own the machine, so it never reads a
folder or reaches a host just because a request named it:

- local folders and `file://` URLs are refused unless `REPOLENS_LOCAL_ROOTS` lists a folder
  that contains them (then only those roots), or, with no roots, `REPOLENS_ALLOW_LOCAL=1`;
- the data dir (`REPOLENS_HOME`, clones of private repositories included) is never
  indexable, neither itself, nor a folder inside it, nor a folder that contains it;
- a remote host is resolved *before* any connection and refused when any of its addresses
  is loopback, link-local (cloud metadata 169.254.169.254 included), private, shared,
  multicast, reserved or unspecified, unless `REPOLENS_ALLOW_PRIVATE_HOSTS=1`. The checked
  addresses are pinned for the fetch, so a DNS answer that changes between the check and the
  fetch (rebinding) cannot reach an internal host: http(s) through curl's resolve list with
  redirects off (nor can a redirect), git:// by connecting to the address, ssh with
  `HostName=<address>` and `HostKeyAlias=<host>` (`ingest.git.process_config_env`).

The CLI uses no policy (`None`): its user owns the machine and may index any folder.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest.errors import HostUnreachableError, IngestError
from ingest.git import transport
from ingest.sources import RepoSource
from rag.errors import ErrorCode
from rag.settings import Settings

ALLOW_LOCAL_VARIABLE = "REPOLENS_ALLOW_LOCAL"
LOCAL_ROOTS_VARIABLE = "REPOLENS_LOCAL_ROOTS"
ALLOW_PRIVATE_HOSTS_VARIABLE = "REPOLENS_ALLOW_PRIVATE_HOSTS"
_DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}

Resolver = Callable[[str, int], Sequence[str]]


class ForbiddenSourceError(IngestError):
    """The server's policy does not let clients index this local folder."""

    code = ErrorCode.FORBIDDEN_SOURCE


class ForbiddenHostError(IngestError):
    """The host resolves to an address a server must not connect to on a client's behalf."""

    code = ErrorCode.FORBIDDEN_HOST


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (what git's resolver would pick from)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise HostUnreachableError(f"cannot resolve host {host}: {error}") from None
    return sorted({str(info[4][0]) for info in infos})


def forbidden_address(address: str) -> bool:
    """True for every address a server must not reach for a client (IPv4-mapped IPv6 included)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


@dataclass(frozen=True)
class SourcePolicy:
    """The server's rules for client-named sources; `admit` enforces them for one source."""

    home: Path
    allow_local: bool = False
    local_roots: tuple[Path, ...] = ()
    allow_private_hosts: bool = False
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)

    @classmethod
    def for_server(cls, settings: Settings) -> SourcePolicy:
        roots = settings.local_roots.replace(",", ":").split(":")
        return cls(
            home=settings.home,
            allow_local=settings.allow_local,
            local_roots=tuple(Path(root).expanduser().resolve() for root in roots if root.strip()),
            allow_private_hosts=settings.allow_private_hosts,
        )

    def local_refusal(self, path: Path) -> str | None:
        """Why a client may not have the folder `path` read, or None when it may."""
        folder, home = path.resolve(), self.home.resolve()
        if self.local_roots:
            if not any(folder.is_relative_to(root) for root in self.local_roots):
                return f"{folder} is outside the folders allowed by {LOCAL_ROOTS_VARIABLE}"
        elif not self.allow_local:
            return (
                "local folders are disabled on this server: start it with "
                f"{ALLOW_LOCAL_VARIABLE}=1 (any folder) or {LOCAL_ROOTS_VARIABLE}=<folders> (only under "
                f"them), e.g. `{ALLOW_LOCAL_VARIABLE}=1 repolens serve`; "
                "the CLI (`repolens ingest LOCATION` with a folder) needs neither"
            )
        if folder.is_relative_to(home) or home.is_relative_to(folder):
            return f"{folder} holds RepoLens' own data ({home}): it is never indexable"
        return None

    def admit(self, source: RepoSource) -> tuple[str, ...]:
        """Refuse `source` if the policy forbids it; for a remote one, return the
        `host:port:address,...` entry that pins git to the addresses checked here
        (`ingest.git.process_config_env` applies it for http(s), ssh and git://)."""
        if source.local_path is not None:
            refusal = self.local_refusal(source.local_path)
            if refusal is not None:
                raise ForbiddenSourceError(refusal)
            return ()
        scheme = transport(source)
        host, _, port_text = source.host.partition(":")
        port = int(port_text) if port_text.isdigit() else _DEFAULT_PORTS.get(scheme, 443)
        addresses = list(self.resolver(host, port))
        if not addresses:
            raise HostUnreachableError(f"cannot resolve host {host}")
        blocked = [address for address in addresses if forbidden_address(address)]
        if blocked and not self.allow_private_hosts:
            raise ForbiddenHostError(
                f"{host} resolves to {', '.join(blocked)}: a loopback, private, link-local or "
                f"metadata address this server does not fetch from (set "
                f"{ALLOW_PRIVATE_HOSTS_VARIABLE}=1 to allow internal git hosts)"
            )
        pinned = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
        return (f"{host}:{port}:{pinned}",)
