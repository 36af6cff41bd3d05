"""Host names as the HTTP layer and the configuration take them: parsing and checking.

Why a module of its own: ``EngineConfig`` checks ``allowed_hosts`` when it is built, long
before (and without) any HTTP app, and the HTTP host guard (``triggers/_origin.py``) parses
the ``Host`` and ``Origin`` headers with the same rules; the configuration sits below the
HTTP layer, so the rules sit below both.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["host_problems", "is_ip", "is_loopback", "split_authority"]

_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_PORT = re.compile(r"[0-9]{1,5}")


def split_authority(authority: str) -> tuple[str, str | None] | None:
    """``(host, port or None)`` of a Host header or URL authority; None if it is not one.

    The host is normalised: lower case, no trailing dot, IPv6 without brackets.
    """
    text = authority.strip().lower()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:]))):
            return None
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return None
        return str(address), rest[1:] or None  # compressed, as the server reports its own
    host, sep, port = text.partition(":")
    if sep and not _PORT.fullmatch(port):
        return None
    host = host.removesuffix(".")
    if not _NAME.fullmatch(host):
        return None
    return host, port or None


def host_problems(entries: Any, name: str = "allowed_hosts") -> list[str]:
    """What is wrong with an ``allowed_hosts`` value (empty: nothing)."""
    if isinstance(entries, str) or not isinstance(entries, Iterable):
        return [f"{name}: expected a list of host names, got {entries!r}"]
    problems = []
    for entry in entries:
        if entry == "*" or (isinstance(entry, str) and is_ip(entry)):
            continue
        parsed = None
        if isinstance(entry, str):
            parsed = split_authority(entry[1:] if entry.startswith(".") else entry)
        if parsed is None or parsed[1] is not None:
            problems.append(
                f"{name}: expected host names such as 'engine.example.com', '.example.com' "
                f"(and its sub-domains), '10.0.0.5', '[::1]' or '*', without scheme or port; "
                f"got {entry!r}"
            )
    return problems


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))
