"""Which ``Host`` a request may name: the defence against DNS rebinding.

A page on ``evil.example`` whose name the attacker then points at 127.0.0.1
reaches a local server from the victim's browser; the browser still sends
``Host: evil.example`` (and an ``Origin`` naming the same host, so the Origin
check alone passes). Only the Host tells the two apart. A request is served
when its Host (with or without a port) is:

* ``localhost`` or an IP address literal: a browser sends an address as Host
  only when the page itself came from that address, which rebinding cannot
  arrange (so the bound address is always served);
* the configured bind host, when it is a name;
* in ``Config.allowed_hosts``: ``name`` (any port), ``name:port`` (that port
  only) or ``*.name`` (any subdomain, any port);
* anything, with ``allowed_hosts=("*",)``, or with no list (None) when bound to
  a wildcard address (0.0.0.0, ::): such a server cannot know its own names,
  so operators exposing it should list them.

A request without a Host (HTTP/1.0) is served: every browser sends one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

#: Bind addresses that listen everywhere, so name nothing.
_WILDCARDS = frozenset({"", "*", "0.0.0.0", "::", "[::]"})
#: Allowed Host values remembered, so a repeat costs one set lookup.
_REMEMBERED = 256

MISDIRECTED = "Misdirected request: this server does not answer to that Host"


def split_host(value: str) -> tuple[str, str | None] | None:
    """``(name, port)`` of a Host value, lower-cased (port None if absent); None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        close = value.find("]")
        if close < 0:
            return None
        name, after = value[: close + 1], value[close + 1 :]
    else:
        name, colon, port = value.partition(":")
        after = colon + port
        name = name[:-1] if name.endswith(".") else name  # "localhost." is localhost
    if not name:
        return None
    if not after:
        return name, None
    port = after[1:]
    if after[0] != ":" or not ((port.isascii() and port.isdigit()) or not port):
        return None
    return name, port or None


def is_address(name: str) -> bool:
    """Whether a (split) host name is an IP literal: dotted IPv4 or bracketed IPv6."""
    try:
        if name.startswith("["):
            return name.endswith("]") and ipaddress.ip_address(name[1:-1]).version == 6
        return ipaddress.ip_address(name).version == 4
    except ValueError:
        return False


class HostPolicy:
    """Decides, from the Host header alone, whether a request is for this server."""

    __slots__ = ("_any", "_names", "_pairs", "_seen", "_suffixes")

    def __init__(self, allowed: Iterable[str] | None, *, bound: Iterable[str] = ()) -> None:
        """*allowed* is ``Config.allowed_hosts``; *bound* the host(s) the server binds."""
        entries = list(allowed) if allowed is not None else None
        bound = [host.strip().lower() for host in bound]
        wildcard = any(host in _WILDCARDS for host in bound)
        self._any = (entries is not None and "*" in entries) or (entries is None and wildcard)
        self._names = {"localhost"}
        self._pairs: set[tuple[str, str]] = set()
        self._suffixes: list[tuple[str, str | None]] = []
        self._seen: set[str] = set()
        for host in bound:
            if host not in _WILDCARDS and not _is_bare_address(host):
                self._names.add(host.rstrip("."))
        for entry in entries or ():
            self._add(entry)

    def _add(self, entry: str) -> None:
        parts = split_host(entry)
        if parts is None:
            raise ValueError(f"not a host name or name:port: {entry!r}")
        name, port = parts
        if name.startswith("*."):
            self._suffixes.append((name[1:], port))
        elif port is None:
            self._names.add(name)
        else:
            self._pairs.add((name, port))

    @property
    def allows_any(self) -> bool:
        return self._any

    def allows(self, host: str | None) -> bool:
        """Whether a request with this Host header value (None: none sent) is served."""
        if host is None or self._any or host in self._seen:
            return True
        allowed = self._judge(host)
        if allowed and len(self._seen) < _REMEMBERED:
            self._seen.add(host)
        return allowed

    def _judge(self, host: str) -> bool:
        parts = split_host(host)
        if parts is None:
            return False
        name, port = parts
        if name in self._names or (port is not None and (name, port) in self._pairs):
            return True
        for suffix, suffix_port in self._suffixes:
            if name.endswith(suffix) and suffix_port in (None, port):
                return True
        return is_address(name)


def _is_bare_address(host: str) -> bool:
    """A bind host written as an address (``::1`` comes unbracketed)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
