"""Requests that came through trusted reverse proxies: client address, scheme, host.

Behind nginx or a load balancer, the hub's TCP peer is the proxy. The proxy
says who the client is, which scheme it used and which host it asked for in
``X-Forwarded-For`` / ``X-Forwarded-Proto`` / ``X-Forwarded-Host``, or in
RFC 7239's ``Forwarded``. Anyone can send those headers, so they are only
believed from peers in ``Settings.trusted_proxies`` (CIDR networks); from
any other peer they are ignored.

>>> from tornado.httputil import HTTPHeaders
>>> proxies = TrustedProxies.of(("127.0.0.1",))
>>> headers = HTTPHeaders({"X-Forwarded-For": "203.0.113.7",
...                        "X-Forwarded-Host": "example.com"})
>>> resolve("127.0.0.1", headers, proxies)
Forwarded(remote_ip='203.0.113.7', protocol=None, host='example.com')
>>> resolve("198.51.100.9", headers, proxies) is None  # not a trusted peer
True

Rules (docs/deployment.md has them in full): the client address is found
by walking ``X-Forwarded-For`` (or the ``for=`` of ``Forwarded`` elements)
from the right, past every trusted proxy; the scheme and host are the last
values of ``X-Forwarded-Proto``/``-Host``, or those of the outermost
``Forwarded`` element a trusted proxy added (``Forwarded`` wins when
present; one that does not parse voids everything forwarded).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from tornado.httputil import HTTPHeaders, HTTPServerRequest, split_host_and_port

__all__ = [
    "Forwarded",
    "TrustedProxies",
    "apply_forwarded",
    "forwarded_of",
    "log_refused_origin",
    "resolve",
]

log = logging.getLogger("torchannels.origin")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Set on a request once :func:`apply_forwarded` has looked at it: the
#: :class:`Forwarded` it applied, or None.
_APPLIED = "_torchannels_forwarded"

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# A forwarded-pair (RFC 7239 4): token "=" (token / quoted-string). Values
# are taken a little more loosely than tokens (``for=1.2.3.4:80`` unquoted
# is common), but never with a separator in them.
_PAIR = re.compile(rf'[ \t]*({_TOKEN})=(?:([^\s,;"]+)|"((?:[^"\\]|\\.)*)")[ \t]*')
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+=-]+)(?::[0-9]{1,5})?")
_PROTOCOLS = frozenset({"http", "https"})


@dataclass(frozen=True, slots=True)
class Forwarded:
    """What trusted proxies say about a request's client."""

    #: The client's address (the peer itself if no hop says more).
    remote_ip: str
    #: ``http`` or ``https`` as the client used it; None: not said.
    protocol: str | None
    #: The ``Host`` the client asked for (``host[:port]``); None: not said.
    host: str | None


class TrustedProxies:
    """A set of CIDR networks whose forwarding headers are believed.

    >>> proxies = TrustedProxies.of(("10.0.0.0/8", "::1"))
    >>> proxies.trusts("10.1.2.3"), proxies.trusts("::ffff:10.1.2.3"), proxies.trusts("11.0.0.1")
    (True, True, False)
    >>> TrustedProxies.of(("10.0.0.1/8",))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: trusted proxy '10.0.0.1/8' is not an IP address or CIDR network: ...
    """

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    @staticmethod
    @functools.lru_cache(maxsize=32)
    def of(items: tuple[str, ...]) -> TrustedProxies:
        """Parse ``items`` (``10.0.0.0/8``, ``127.0.0.1``, ``::1``); raise
        ValueError naming the first one that is not a network."""
        networks: list[Network] = []
        for item in items:
            try:
                network = ipaddress.ip_network(item.strip(), strict=True)
            except ValueError as exc:
                raise ValueError(
                    f"trusted proxy {item!r} is not an IP address or CIDR network: {exc}"
                ) from None
            if network not in networks:
                networks.append(network)
        return TrustedProxies(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def contains(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def trusts(self, text: str | None) -> bool:
        """True if ``text`` is an IP address in one of the networks."""
        address = _address(text or "")
        return address is not None and self.contains(address)


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return address


def _node(text: str) -> Address | None:
    """The address of a ``for=`` node: ``1.2.3.4``, ``1.2.3.4:80``,
    ``[2001:db8::1]``, ``[2001:db8::1]:80``; None for ``unknown`` or an
    obfuscated identifier."""
    if text.startswith("["):
        inside, bracket, _ = text[1:].partition("]")
        return _address(inside) if bracket else None
    address = _address(text)
    if address is None and text.count(":") == 1:
        address = _address(text.partition(":")[0])
    return address


def parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """The elements of a ``Forwarded`` header, parameter names lower-cased;
    None if it does not follow RFC 7239's grammar (or repeats a parameter
    within one element).

    >>> parse_forwarded('for=192.0.2.60;proto=http, for="[2001:db8::1]:4711";host=a.example')
    [{'for': '192.0.2.60', 'proto': 'http'}, {'for': '[2001:db8::1]:4711', 'host': 'a.example'}]
    >>> parse_forwarded("for=1.2.3.4 junk") is None
    True
    """
    elements: list[dict[str, str]] = [{}]
    pos, end = 0, len(value)
    expect_pair = True
    while pos < end:
        char = value[pos]
        if char in " \t":
            pos += 1
        elif char == ",":
            elements.append({})
            pos, expect_pair = pos + 1, True
        elif char == ";":
            pos, expect_pair = pos + 1, True
        elif expect_pair and (match := _PAIR.match(value, pos)):
            name = match.group(1).lower()
            if name in elements[-1]:
                return None
            quoted = match.group(3)
            text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match.group(2)
            elements[-1][name] = text
            pos, expect_pair = match.end(), False
        else:
            return None
    return [element for element in elements if element]


def _protocol(value: str | None) -> str | None:
    value = (value or "").strip().lower()
    return value if value in _PROTOCOLS else None


def _host(value: str | None) -> str | None:
    value = (value or "").strip()
    return value if _HOST.fullmatch(value) else None


def _last(headers: HTTPHeaders, name: str) -> str | None:
    values = [v.strip() for line in headers.get_list(name) for v in line.split(",")]
    return values[-1] if values else None


def resolve(peer: str | None, headers: HTTPHeaders, proxies: TrustedProxies) -> Forwarded | None:
    """What the proxies in front of the hub say about a request from
    ``peer``; None if ``peer`` is not a trusted proxy (its headers are then
    ignored)."""
    if peer is None or not proxies.trusts(peer):
        return None
    lines = headers.get_list("Forwarded")
    if lines:
        elements = parse_forwarded(", ".join(lines))
        if elements is None:
            return Forwarded(peer, None, None)
        return _walk_forwarded(peer, elements, proxies)
    client = peer
    hops = [v.strip() for line in headers.get_list("X-Forwarded-For") for v in line.split(",")]
    for hop in reversed(hops):
        address = _node(hop)  # some proxies add a port: "203.0.113.7:4711"
        if address is None:
            break
        client = str(address)
        if not proxies.contains(address):
            break
    return Forwarded(
        client,
        _protocol(_last(headers, "X-Forwarded-Proto")),
        _host(_last(headers, "X-Forwarded-Host")),
    )


def _walk_forwarded(
    peer: str, elements: list[dict[str, str]], proxies: TrustedProxies
) -> Forwarded:
    client, protocol, host = peer, None, None
    for element in reversed(elements):  # each was added by a trusted proxy
        protocol = _protocol(element.get("proto")) or protocol
        host = _host(element.get("host")) or host
        address = _node(element.get("for", ""))
        if address is None:
            break
        client = str(address)
        if not proxies.contains(address):
            break
    return Forwarded(client, protocol, host)


def apply_forwarded(request: HTTPServerRequest, proxies: TrustedProxies) -> None:
    """Make ``request.remote_ip``, ``request.protocol`` and ``request.host``
    (with ``host_name``) say what trusted proxies forwarded; the ``Host``
    header itself is left as received. Looks at a request once: calling it
    again (the standalone server and ``ChannelMixin`` both do) changes
    nothing."""
    if not proxies or hasattr(request, _APPLIED):
        return
    view = resolve(request.remote_ip, request.headers, proxies)
    setattr(request, _APPLIED, view)
    if view is None:
        return
    request.remote_ip = view.remote_ip
    if view.protocol is not None:
        request.protocol = view.protocol
    if view.host is not None:
        request.host = view.host
        request.host_name = split_host_and_port(view.host.lower())[0]


def forwarded_of(request: HTTPServerRequest) -> Forwarded | None:
    """What :func:`apply_forwarded` believed of ``request``; None if it
    came from no trusted proxy (or was never looked at)."""
    view = getattr(request, _APPLIED, None)
    return view if isinstance(view, Forwarded) else None


#: (origin, host) pairs already explained in the log, so a page retrying
#: (or a hostile one) cannot flood it; bounded.
_explained: set[tuple[str, str]] = set()
_EXPLAINED_MAX = 256


def log_refused_origin(origin: str, request: HTTPServerRequest) -> None:
    """Say in the log, once per origin and host, why a WebSocket handshake
    from ``origin`` was refused (403), and the likely fix behind a proxy."""
    view = forwarded_of(request)
    host = view.host if view is not None and view.host else request.headers.get("Host", "")
    key = (origin, host)
    if key in _explained or len(_explained) >= _EXPLAINED_MAX:
        return
    _explained.add(key)
    sent = "X-Forwarded-Host" in request.headers or "Forwarded" in request.headers
    if sent and view is None:
        why = (
            f"the forwarding headers came from {request.remote_ip}, which is not a "
            "trusted proxy (--trusted-proxies, Settings.trusted_proxies)"
        )
    else:
        why = (
            "behind a reverse proxy, pass the browser's Host (nginx: proxy_set_header "
            "Host $http_host) or trust the proxy's X-Forwarded-Host (--trusted-proxies)"
        )
    log.warning(
        "WebSocket from origin %r refused (403): not the request's host %r nor an allowed "
        "origin; %s. See docs/deployment.md",
        origin,
        host,
        why,
    )
