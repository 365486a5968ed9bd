"""One way to split `scheme://host:port/path?query`, shared by the three URI parsers: sources
(`runtime.sources.uri`), outputs (`runtime.outputs.uri`) and Triton models (`triton://`, runtime.backends).

Each parser keeps its own rules and messages (what a scheme requires, which defaults apply); this only
cuts the text into its parts, the same way everywhere.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


@dataclass(frozen=True)
class URIParts:
    """`scheme://netloc/path?query`: the scheme lower-cased, the rest as written.

    rest: everything after "://"; netloc: up to the first "/" or "?"; path: from that "/" ("" without one);
    query: after the first "?" ("" without one)."""

    scheme: str
    rest: str
    netloc: str
    path: str
    query: str

    @property
    def host(self) -> str:
        """The netloc without its port, as written ("@" and "user:password@" prefixes kept)."""
        return _host_port(self.netloc)[0]

    @property
    def hostname(self) -> str:
        """The host without a "user:password@" prefix."""
        return self.host.rpartition("@")[2]

    @property
    def port(self) -> str:
        """The port as written ("" without one); `port_number` checks it."""
        return _host_port(self.netloc)[1]

    @property
    def segments(self) -> list[str]:
        """The path's "/"-separated parts, without the leading "/" (e.g. NAME and VERSION of triton://)."""
        return self.path[1:].split("/") if self.path else []


def _host_port(netloc: str) -> tuple[str, str]:
    userinfo, at, hostport = netloc.rpartition("@")  # a ":" in user:password is not a port
    host, colon, port = hostport.rpartition(":")
    if not colon or hostport.endswith("]"):  # no port, or a bracketed IPv6 address without one
        return netloc, ""
    return userinfo + at + host, port


def split_uri(text: str) -> URIParts | None:
    """`text` cut at "://", then at its first "?" and the first "/" before it; None when it has no scheme."""
    match = _SCHEME.match(text)
    if match is None:
        return None
    rest = match.group(2)
    before_query, _, query = rest.partition("?")
    netloc, slash, path = before_query.partition("/")
    return URIParts(match.group(1).lower(), rest, netloc, slash + path, query)


def port_number(text: str) -> int | None:
    """A port written as digits, 1 to 65535; None for anything else (empty, 0, too large, not a number)."""
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None
