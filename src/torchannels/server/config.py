"""Configuration of the standalone server (``torchannels serve``).

Every option of :class:`ServerConfig` comes, highest precedence first, from a
command-line flag (``--max-channels``), an environment variable
(``TORCHANNELS_MAX_CHANNELS``), a TOML file named by ``--config`` or
``TORCHANNELS_CONFIG`` (``max_channels = 64`` or ``max-channels = 64``), or
the default. Problems raise :class:`ConfigError` naming where the bad value
came from.

An empty string is a value, not "unset": it disables ``api_key`` and
``token_secret`` and empties lists, so a higher layer can switch off what a
lower one set.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import difflib
import hashlib
import hmac
import ipaddress
import math
import os
import re
import secrets
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

from ..brokers import HistoryPolicy
from ..brokers.lifecycle import EVENT_TYPES
from ..channel_options import ChannelOptions, check_user_limited
from ..channel_options import check_pattern as check_channel_pattern
from ..errors import ChannelNameError, TorChannelsError
from ..forwarded import TrustedProxies
from ..identity import derive_secret
from ..outbox.schema import check_table
from ..patterns import check_pattern
from ..settings import Settings
from ..token_keys import JwksKeys, VerifyKey, public_key, secret_key
from ..tokens import TokenVerifier

ENV_PREFIX = "TORCHANNELS_"
CONFIG_ENV = "TORCHANNELS_CONFIG"
#: Option kinds that are lists (repeat the flag or comma-separate).
_LISTS = ("patterns", "origins", "networks", "headers", "events")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: ``--event-loop``: asyncio's own loop, or uvloop's (installed separately).
EVENT_LOOPS = ("asyncio", "uvloop")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_ORIGIN_RE = re.compile(r"https?://[^\s/?#@]+")


class ConfigError(TorChannelsError, ValueError):
    """An option has a bad value; the message names its source and the problem."""


def _opt(default: Any, kind: str, help: str, *, low: float | None = None, **extra: Any) -> Any:
    # ``low`` is inclusive unless ``above`` is set; ``high`` is inclusive.
    meta = {"kind": kind, "help": help, "low": low, **extra}
    # Secrets stay out of repr() so a logged config does not leak them.
    return field(default=default, repr=kind not in ("secret", "broker"), metadata=meta)


@dataclass(frozen=True)
class ServerConfig:
    """Options of the standalone server; see each field's ``--help`` text.

    >>> config = ServerConfig(port=9000, anonymous=["demo:*", "news"])
    >>> config.port, config.anonymous, config.history().size
    (9000, ('demo:*', 'news'), 1000)
    """

    host: str = _opt("127.0.0.1", "str", "address to listen on (0.0.0.0: all interfaces)")
    port: int = _opt(8090, "int", "TCP port to listen on (0: any free port)", low=0, high=65535)
    api_key: str | None = _opt(
        None,
        "secret",
        "key publishers send to the HTTP publish API; unset disables the API "
        "(prefer the env var or file: flags show in ps)",
    )
    token_secret: str | None = _opt(
        None,
        "secret",
        "HS256 secret of signed subscription tokens (JWT); unset: only "
        "anonymous channels can be read (unless a public key or JWKS URL is set)",
    )
    token_public_key: str | None = _opt(
        None,
        "optional",
        "file of a PEM public key that verifies subscription tokens: RSA (RS256), "
        "EC (ES256/ES384/ES512 by curve) or Ed25519 (EdDSA); the key fixes the algorithm",
        metavar="FILE",
    )
    token_jwks_url: str | None = _opt(
        None,
        "optional",
        "http(s) URL of a JWKS document whose keys verify tokens by their 'kid' "
        "(fetched with a 5 s timeout, cached 5 min, refetched for an unknown kid at "
        "most every 30 s, used stale up to 1 h when fetching fails)",
        metavar="URL",
    )
    token_audience: str | None = _opt(
        None, "optional", "an 'aud' every token must name; unset: 'aud' is not checked"
    )
    token_issuer: str | None = _opt(
        None, "optional", "the 'iss' every token must have; unset: 'iss' is not checked"
    )
    token_leeway: float = _opt(
        0.0, "float", "seconds of clock skew allowed on 'exp', 'nbf' and 'iat'", low=0, high=3600
    )
    proxy_connect: str | None = _opt(
        None,
        "optional",
        "URL of your backend's connect hook: asked (POST, signed) who a connection without a "
        "token is, from its cookies and --proxy-headers",
        metavar="URL",
    )
    proxy_subscribe: str | None = _opt(
        None,
        "optional",
        "URL of your backend's subscribe hook: asked about a channel no token, connect answer "
        "or anonymous pattern covers",
        metavar="URL",
    )
    proxy_publish: str | None = _opt(
        None,
        "optional",
        "URL of your backend's publish hook: asked about client publishes on channels with "
        'publish = "proxy" (it may replace the data)',
        metavar="URL",
    )
    proxy_secret: str | None = _opt(
        None, "secret", "key of the HMAC-SHA256 signature of every hook call (needed with a hook)"
    )
    proxy_timeout: float = _opt(
        3.0, "float", "seconds a hook call may take (past it: proxy_unavailable)", low=0, above=True
    )
    proxy_max_in_flight: int = _opt(
        64, "int", "hook calls at once per process (past it: proxy_unavailable at once)", low=1
    )
    proxy_headers: tuple[str, ...] = _opt(
        (),
        "headers",
        "request headers passed to the connect hook (cookies always are); repeat or comma-separate",
    )
    webhook_url: str | None = _opt(
        None,
        "optional",
        "http(s) URL the lifecycle webhooks POST to (signed batches of the events named by "
        "--webhook-events; docs/api.md#webhooks)",
        metavar="URL",
    )
    webhook_secret: str | None = _opt(
        None, "secret", "key of the webhooks' HMAC-SHA256 signature (needed with --webhook-url)"
    )
    webhook_events: tuple[str, ...] = _opt(
        (),
        "events",
        "the webhook events sent (needed with --webhook-url): channel_occupied, "
        "channel_vacated, user_online, user_offline, member_joined, member_left; "
        "repeat or comma-separate",
    )
    webhook_retry_for: float = _opt(
        600.0,
        "float",
        "seconds an event is retried (timeouts, refused connections, 408, 429, 5xx) "
        "before it is dropped",
        low=0,
    )
    webhook_timeout: float = _opt(
        10.0, "float", "seconds one webhook POST may take", low=0, above=True
    )
    webhook_queue_max: int = _opt(
        100_000,
        "int",
        "webhook events waiting at most (in Redis with a Redis broker); past it new events "
        "are dropped, counted and logged",
        low=1,
    )
    outbox: str | None = _opt(
        None,
        "secret",
        "PostgreSQL DSN of a transactional outbox to publish from (postgresql://USER@HOST/DB "
        "or key=value pairs; docs/outbox.md); needs torchannels[postgres]",
        metavar="DSN",
    )
    outbox_table: str = _opt(
        "torchannels_outbox", "str", "the outbox table (a lowercase SQL name, no schema)"
    )
    outbox_batch: int = _opt(
        100, "int", "outbox rows claimed per partition per transaction", low=1, high=10000
    )
    outbox_retention: float = _opt(
        0.0,
        "float",
        "seconds a published outbox row is kept (marked published_at) before it is deleted "
        "(0: deleted at once)",
        low=0,
    )
    admin_password: str | None = _opt(
        None,
        "secret",
        "password of the admin page at /admin; unset: the API key (--api-key); "
        "neither: no admin page",
    )
    admin: bool = _opt(
        True, "bool", "serve the admin page at /admin when an admin password or API key is set"
    )
    broker: str = _opt(
        "memory",
        "broker",
        "where channels live: 'memory' (this process only) or a Redis URL "
        "(redis://[:PASSWORD@]HOST:PORT/DB, rediss:// for TLS, redis+cluster:// for a "
        "Redis Cluster) shared by every server process",
    )
    redis_prefix: str = _opt(
        "torchannels", "str", "prefix of every Redis key, so servers can share one Redis"
    )
    workers: int = _opt(
        1,
        "int",
        "server processes on this port (needs a shared broker such as Redis)",
        low=1,
        high=256,
    )
    channel_limit: int = _opt(
        100_000,
        "int",
        "channels the in-memory broker holds at most (idle ones are forgotten after "
        "--history-meta-ttl, or sooner to make room)",
        low=1,
    )
    anonymous: tuple[str, ...] = _opt(
        ("demo:*",),
        "patterns",
        "channels readable without a token: exact names or prefixes "
        "ending in '*'; repeat or comma-separate, empty for none",
    )
    history_size: int = _opt(1000, "int", "messages of history kept per channel (0: none)", low=0)
    history_ttl: float = _opt(3600.0, "float", "seconds history is kept", low=0, above=True)
    history_meta_ttl: float = _opt(
        604800.0,
        "float",
        "seconds an idle channel's epoch and last offset are kept (at least --history-ttl), "
        "so a client that had every message resumes without a reset",
        low=0,
    )
    max_channels: int = _opt(64, "int", "channels one subscribe request may name", low=1)
    max_request_bytes: int = _opt(
        16384, "int", "bytes of query string plus Last-Event-ID a subscriber may send", low=1
    )
    max_publish_bytes: int = _opt(65536, "int", "bytes of one publish API request body", low=1)
    idempotency_window: float = _opt(
        600.0,
        "float",
        "seconds a publish's idempotency key is remembered: a publish repeating it in the "
        "same channel within this time stores nothing and answers the first one's position",
        low=0,
        above=True,
    )
    max_client_publish_bytes: int = _opt(
        16384,
        "int",
        "bytes a client's publish may carry (its data as compact JSON); channels allow "
        "client publishes with their publish option",
        low=1,
    )
    client_publish_rate: float = _opt(
        10.0,
        "float",
        "publishes a second one client may make (a burst of as many; past it: rate_limited)",
        low=0,
        above=True,
    )
    longpoll_timeout: float = _opt(
        25.0, "float", "seconds a long-poll is held before an empty answer", low=0, above=True
    )
    ping_interval: float = _opt(
        15.0, "float", "seconds between keep-alive pings on streams", low=0, above=True
    )
    stream_max_bytes: int = _opt(
        1 << 20,
        "int",
        "bytes after which a stream or SSE response ends with reconnect (proxies may buffer "
        "endless responses); a soft cap: the frame crossing it is still sent",
        low=1,
    )
    max_pending_bytes: int = _opt(
        1 << 20,
        "int",
        "bytes queued for one stream, SSE or WebSocket client (catch-up included) before "
        "it is dropped with reconnect (slow_consumer) and resumes",
        low=1,
    )
    write_timeout: float = _opt(
        30.0,
        "float",
        "seconds a write to a stream, SSE or WebSocket client may go without completing "
        "before the client is dropped as not reading (reconnect slow_consumer, close 4001)",
        low=0,
        above=True,
    )
    header_timeout: float = _opt(
        10.0,
        "float",
        "seconds a connection gets to send a request's headers, counted from when the server "
        "is ready for the request (so also how long a keep-alive connection may stay idle)",
        low=0,
        above=True,
    )
    body_timeout: float = _opt(
        60.0, "float", "seconds a client gets to send a request body", low=0, above=True
    )
    backlog: int = _opt(
        0,
        "int",
        "queue of connections the kernel accepts before the server does (listen backlog; "
        "0: the system's maximum, /proc/sys/net/core/somaxconn)",
        low=0,
    )
    max_connections: int = _opt(
        0,
        "int",
        "open connections at most; past it a new one gets 503 and is closed "
        "(0: nine tenths of the open-file limit)",
        low=0,
    )
    max_connections_per_ip: int = _opt(
        0,
        "int",
        "open connections from one client address at most (past it a new one gets 503 "
        "too_many_connections_per_ip); behind --trusted-proxies, requests are counted per "
        "forwarded client instead (0: a tenth of the connection cap)",
        low=0,
        metavar="N",
    )
    internal_port: int | None = _opt(
        None,
        "int",
        "TCP port of an internal listener serving /health, /metrics, /admin and the publish "
        "API (/api) instead of the public port, outside the connection limits (0: any free "
        "port; unset or empty: none, all on the public port)",
        low=0,
        high=65535,
        optional=True,
    )
    internal_host: str = _opt(
        "127.0.0.1", "str", "address of the internal listener (--internal-port)"
    )
    allowed_origins: tuple[str, ...] = _opt(
        (),
        "origins",
        "origins (scheme://host[:port]) besides the page's own whose pages may subscribe "
        "(WebSocket, and CORS on the HTTP transports) and call the publish API (CORS); "
        "repeat or comma-separate",
    )
    cors_credentials: bool = _opt(
        False,
        "bool",
        "let --allowed-origins send cookies to the subscribe URL "
        "(Access-Control-Allow-Credentials: true)",
    )
    dev: bool = _opt(
        False,
        "bool",
        "development mode: without an API key, generate one; print it with ready-to-paste "
        "publish commands and show it on the demo page; without a token secret, derive one "
        "from the key for the demo chat's identities (never in production)",
    )
    trusted_proxies: tuple[str, ...] = _opt(
        (),
        "networks",
        "reverse proxies (IP addresses or CIDR networks) whose X-Forwarded-For/-Proto/-Host "
        "and Forwarded headers are believed, for client addresses, logs and the WebSocket "
        "origin check; repeat or comma-separate, empty for none",
    )
    demo: bool = _opt(True, "bool", "serve the demo page at / and its demo publisher")
    metrics: bool = _opt(False, "bool", "serve Prometheus metrics (needs torchannels[metrics])")
    shutdown_timeout: float = _opt(
        10.0, "float", "seconds clients get to leave on SIGTERM/SIGINT", low=0
    )
    log_level: str = _opt("info", "choice", "one of " + ", ".join(LOG_LEVELS), choices=LOG_LEVELS)
    event_loop: str = _opt(
        "asyncio",
        "choice",
        "the event loop: asyncio (the standard library's) or uvloop (pip install uvloop; "
        "it did not make fan-out faster: docs/benchmarks.md)",
        choices=EVENT_LOOPS,
        metavar="LOOP",
    )
    presence_grace: float = _opt(
        5.0,
        "float",
        "seconds a user stays present after their last connection to a presence channel "
        "went (a reconnect or page reload within it makes no leave and no join); also how "
        "long a polling client stays present after each request",
        low=0,
    )
    presence_ttl: float = _opt(
        30.0,
        "float",
        "seconds a presence entry lives without a heartbeat (heartbeats every third of it): "
        "the users of a killed process leave within this",
        low=0,
        above=True,
    )
    #: ``[channels."PATTERN"]`` tables of the TOML file (no flag, no env).
    channels: tuple[tuple[str, ChannelOptions], ...] = field(
        default=(), metadata={"kind": "channels", "help": "", "low": None}
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _convert(f, getattr(self, f.name), f"ServerConfig({f.name}=...)")
            object.__setattr__(self, f.name, value)
        if self.token_jwks_url is not None and not self.token_jwks_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(f"token_jwks_url: {self.token_jwks_url!r} is not an http(s) URL")
        for url in self.hook_urls().values():
            if url is not None and not url.startswith(("http://", "https://")):
                raise ConfigError(f"proxy hook URL {url!r} is not an http(s) URL")
        url = self.webhook_url
        if url is not None and not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook_url: {url!r} is not an http(s) URL")
        try:
            check_table(self.outbox_table)
        except ValueError as exc:
            raise ConfigError(f"outbox_table: {exc}") from None
        if self.internal_port and self.internal_port == self.port:
            raise ConfigError(
                f"--internal-port {self.internal_port} is --port too: give the internal "
                "listener a port of its own"
            )

    def hook_urls(self) -> dict[str, str | None]:
        """The backend hooks' URLs by name (None: not configured)."""
        return {"connect": self.proxy_connect, "subscribe": self.proxy_subscribe,
                "publish": self.proxy_publish}  # fmt: skip

    def check_serving(self) -> None:
        """What ``serve`` needs beyond each option's own check (ConfigError:
        exit status 2): a hook needs ``--proxy-secret``."""
        if any(self.hook_urls().values()) and not self.proxy_secret:
            raise ConfigError(
                "a proxy hook needs --proxy-secret (TORCHANNELS_PROXY_SECRET): the key your "
                "backend checks each call's X-Torchannels-Signature with"
            )
        if self.webhook_url is not None:
            if not self.webhook_secret:
                raise ConfigError(
                    "--webhook-url needs --webhook-secret (TORCHANNELS_WEBHOOK_SECRET): the key "
                    "your receiver checks each POST's X-Torchannels-Signature with"
                )
            if not self.webhook_events:
                raise ConfigError(
                    "--webhook-url needs --webhook-events: which of "
                    + ", ".join(EVENT_TYPES)
                    + " to send"
                )

    def settings(self) -> Settings:
        """The subscriber-side :class:`~torchannels.Settings` these options give.

        >>> ServerConfig(max_channels=8).settings().max_channels
        8
        """
        return Settings(
            max_channels=self.max_channels,
            max_request_bytes=self.max_request_bytes,
            longpoll_timeout=self.longpoll_timeout,
            ping_interval=self.ping_interval,
            stream_max_bytes=self.stream_max_bytes,
            max_pending_bytes=self.max_pending_bytes,
            write_timeout=self.write_timeout,
            allowed_origins=self.allowed_origins,
            cors_credentials=self.cors_credentials,
            trusted_proxies=self.trusted_proxies,
            presence_grace=self.presence_grace,
            presence_ttl=self.presence_ttl,
            max_client_publish_bytes=self.max_client_publish_bytes,
            client_publish_rate=self.client_publish_rate,
            client_id_secret=self.client_id_secret(),
        )

    def _public_key(self) -> VerifyKey:
        path = self.token_public_key
        try:
            with open(path or "", "rb") as f:
                return public_key(f.read())
        except OSError as exc:
            raise ConfigError(f"token_public_key: {path!r}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"token_public_key: {path!r}: {exc}") from None

    def token_verifier(self) -> TokenVerifier | None:
        """What checks subscription tokens: the secret, public key and JWKS
        URL given (any of them), or None when none is.

        >>> ServerConfig().token_verifier() is None
        True
        >>> ServerConfig(token_secret="s", token_leeway=5).token_verifier().leeway
        5.0
        """
        keys = []
        if self.token_secret is not None:
            try:
                keys.append(secret_key(self.token_secret))
            except ValueError as exc:  # PyJWT refuses a PEM key as an HMAC secret
                raise ConfigError(f"token_secret: {exc}") from None
        if self.token_public_key is not None:
            keys.append(self._public_key())
        jwks = None if self.token_jwks_url is None else JwksKeys(self.token_jwks_url)
        if not keys and jwks is None:
            return None
        return TokenVerifier(
            keys, jwks, audience=self.token_audience, issuer=self.token_issuer,
            leeway=self.token_leeway,
        )  # fmt: skip

    def client_id_secret(self) -> bytes:
        """The key that signs client ids and presence cursors: derived from
        the token secret, else the API key, else this ``serve``'s random
        salt (made before ``--workers`` fork, so its workers share it).
        Separate ``serve`` processes share it only through the token secret
        or API key.

        >>> ServerConfig(token_secret="s").client_id_secret() == ServerConfig(
        ...     token_secret="s", api_key="k").client_id_secret()
        True
        """
        from .admin import session_salt

        key = self.token_secret or self.api_key
        base = key.encode() if key else session_salt()
        return derive_secret(base, "client ids")

    def admin_secret(self) -> str | None:
        """The admin page's password: ``admin_password``, else ``api_key``;
        None when the page is off.

        >>> ServerConfig(api_key="k").admin_secret()
        'k'
        >>> ServerConfig(api_key="k", admin=False).admin_secret() is None
        True
        """
        if not self.admin:
            return None
        return self.admin_password or self.api_key

    def with_dev_key(self) -> ServerConfig:
        """In dev mode, a copy with a random API key when none is set and a
        token secret (for the demo chat's identities) when none is set,
        derived from the API key so that the demo page's tokens outlive a
        restart with the same key; else self.

        >>> ServerConfig(dev=True).with_dev_key().api_key is not None
        True
        >>> dev = ServerConfig(dev=True, api_key="k").with_dev_key()
        >>> again = ServerConfig(dev=True, api_key="k").with_dev_key()
        >>> dev.api_key, dev.token_secret == again.token_secret
        ('k', True)
        >>> ServerConfig(dev=True, token_secret="s").with_dev_key().token_secret
        's'
        """
        if not self.dev:
            return self
        key = self.api_key if self.api_key is not None else secrets.token_urlsafe(18)
        secret = self.token_secret
        if secret is None:
            digest = hmac.new(key.encode(), b"torchannels dev token secret", hashlib.sha256)
            secret = base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")
        return replace(self, api_key=key, token_secret=secret)

    def listen_backlog(self) -> int:
        """The listen backlog to use: ``backlog``, or the system's maximum for 0.

        >>> ServerConfig(backlog=4096).listen_backlog()
        4096
        """
        return self.backlog or system_backlog()

    def history(self) -> HistoryPolicy:
        """The broker's default :class:`~torchannels.HistoryPolicy`.

        >>> ServerConfig(history_size=0).history()
        HistoryPolicy(size=0, ttl=3600.0, meta_ttl=604800.0)
        """
        return HistoryPolicy(
            size=self.history_size, ttl=self.history_ttl, meta_ttl=self.history_meta_ttl
        )


SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"


def system_backlog(path: str = SOMAXCONN_PATH) -> int:
    """The largest listen backlog the kernel grants: ``path`` (Linux), else
    :data:`socket.SOMAXCONN`. A larger one is silently cut to it."""
    try:
        with open(path, encoding="ascii") as file:
            value = int(file.read().strip())
    except (OSError, ValueError):
        return socket.SOMAXCONN
    return value if value > 0 else socket.SOMAXCONN


def env_name(name: str) -> str:
    """The environment variable of option ``name``.

    >>> env_name("api_key")
    'TORCHANNELS_API_KEY'
    """
    return ENV_PREFIX + name.upper()


def _show(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per :class:`ServerConfig` field to ``parser``.

    Flags default to None ("not given") so :func:`load_config` can apply the
    precedence; values are checked there, not by argparse.

    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> parser.parse_args(["--port", "9000", "--no-demo"]).demo
    False
    """
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML file of options, keys named like the flags [env {CONFIG_ENV}]",
    )
    for f in fields(ServerConfig):
        meta = f.metadata
        if meta["kind"] == "channels":
            continue  # TOML tables only
        flag = "--" + f.name.replace("_", "-")
        help = f"{meta['help']} [env {env_name(f.name)}; default: {_show(f.default)}]"
        help = help.replace("%", "%%")  # argparse %-formats help texts
        if meta["kind"] == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help)
        elif meta["kind"] in _LISTS:
            parser.add_argument(flag, action="append", metavar="LIST", help=help)
        else:
            metavar = meta.get("metavar") or f.name.split("_")[-1].upper()
            parser.add_argument(flag, metavar=metavar, help=help)


def load_config(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] = os.environ
) -> ServerConfig:
    """Merge flags (``args``), ``environ`` and the TOML file over the defaults.

    >>> load_config(None, {"TORCHANNELS_PORT": "9000", "TORCHANNELS_DEMO": "off"}).demo
    False
    """
    given = vars(args) if args is not None else {}
    values: dict[str, Any] = {}
    path, origin = given.get("config"), "--config"
    if path is None:
        path, origin = environ.get(CONFIG_ENV), CONFIG_ENV
    if path:  # an empty path means no file, so a flag can drop the env's file
        values.update(_read_file(os.fspath(path), origin))
    for f in fields(ServerConfig):
        if f.metadata["kind"] == "channels":
            continue  # TOML tables only
        if env_name(f.name) in environ:
            values[f.name] = _convert(f, environ[env_name(f.name)], env_name(f.name), text=True)
        if given.get(f.name) is not None:
            flag = "--" + f.name.replace("_", "-")
            values[f.name] = _convert(f, given[f.name], flag, text=True)
    return ServerConfig(**values)


def _read_file(path: str, origin: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"config file {path!r} (from {origin}): {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path!r} (from {origin}) is not TOML: {exc}") from None
    known = {f.name: f for f in fields(ServerConfig)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"config file {path!r}: unknown key {key!r}{extra}")
        if name in values:
            raise ConfigError(f"config file {path!r}: key {key!r} is given twice")
        if name == "channels":
            values[name] = channel_tables(value, f"config file {path!r}: ")
            continue
        values[name] = _convert(known[name], value, f"config file {path!r}: key {key!r}")
    return values


CHANNELS_EPILOG = """channel options by pattern (TOML file only):
  [channels."room:*"]          # an exact channel name, or a prefix ending in *;
  presence = true              # the most specific pattern wins (exact, then the
  join_leave = true            # longest prefix); tables are not merged
  history_size = 100
  history_ttl = 600
keys:
"""


def channels_epilog() -> str:
    """The ``serve --help`` epilog: the keys of a ``[channels."PATTERN"]`` table."""
    from ..channel_options import OPTION_HELP

    rows = [f"  {key:<17} {text}" for key, text in OPTION_HELP.items()]
    return CHANNELS_EPILOG + "\n".join(rows)


def channel_tables(value: object, where: str) -> tuple[tuple[str, ChannelOptions], ...]:
    """``[channels."PATTERN"]`` tables as (pattern, options) pairs; ConfigError
    names ``channels."PATTERN".KEY`` for a bad key or value.

    >>> channel_tables({"room:*": {"presence": True}}, "")[0][1].presence
    True
    """
    if isinstance(value, tuple | list):
        value = dict(value)
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where}channels: must be tables [channels."PATTERN"]')
    tables: list[tuple[str, ChannelOptions]] = []
    for pattern, options in value.items():
        name = f'{where}channels."{pattern}"'
        try:
            check_channel_pattern(pattern)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if isinstance(options, ChannelOptions):
            tables.append((pattern, options))
            continue
        if not isinstance(options, Mapping):
            raise ConfigError(f"{name}: must be a table of options")
        for key in options:
            probe = {key: options[key]}
            if key == "join_leave":
                probe["presence"] = True  # checked with the whole table below
            try:
                ChannelOptions.of(probe)
            except ValueError as exc:
                raise ConfigError(f"{name}.{key}: {_tail(exc)}") from None
        try:
            made = ChannelOptions.of(options)
        except ValueError as exc:  # join_leave without presence
            raise ConfigError(f"{name}.join_leave: {exc}") from None
        try:
            check_user_limited(pattern, made)
        except ValueError as exc:
            raise ConfigError(f"{name}.user_limited: {exc}") from None
        tables.append((pattern, made))
    return tuple(tables)


def _tail(exc: ValueError) -> str:
    # "key: unknown option (...)" -> "unknown option (...)": the key is named already.
    text = str(exc)
    head, sep, rest = text.partition(": ")
    return rest if sep and " " not in head else text


def _items(value: object, text: bool) -> tuple[str, ...]:
    # Lists from the env are comma-separated; repeated flags arrive as a list
    # of such strings. TOML and Python give real lists, taken as they are.
    if text and isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    if not text:
        return tuple(value)
    return tuple(item.strip() for entry in value for item in entry.split(",") if item.strip())


def _convert(f: Field[Any], value: object, source: str, *, text: bool = False) -> Any:
    """Check one option's value; with ``text`` (flags, env) parse strings first."""
    kind, meta = f.metadata["kind"], f.metadata
    try:
        if kind in ("str", "choice") and isinstance(value, str):
            if not value.strip():
                raise ValueError("must not be empty")
            if kind == "choice" and value.lower() not in meta["choices"]:
                raise ValueError(f"must be one of {', '.join(meta['choices'])}")
            return value.lower() if kind == "choice" else value
        if kind == "broker" and isinstance(value, str):
            return _check_broker(value)
        if kind in ("secret", "optional") and (value is None or isinstance(value, str)):
            return value or None
        if kind == "bool":
            if text and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            if isinstance(value, bool):
                return value
            raise ValueError("must be a boolean (1/0, true/false, yes/no, on/off)")
        if kind in ("int", "float"):
            if meta.get("optional") and value in (None, ""):
                return None  # an optional number: unset, or emptied by a higher layer
            return _number(kind, value, meta, text)
        if kind == "channels":
            return channel_tables(value, "")
        if kind in _LISTS:
            items = _items(value, text)
            checks = {
                "patterns": check_pattern,
                "origins": _check_origin,
                "headers": _check_header,
                "events": _check_event,
            }
            check = checks.get(kind, _check_network)
            return tuple(dict.fromkeys(check(item) for item in items))
    except (ValueError, ChannelNameError) as exc:
        # List items name themselves in the message; secrets must not be shown.
        listed = (*_LISTS, "secret", "broker")
        shown = "" if kind in listed else f"{value!r} "
        raise ConfigError(f"{source}: {shown}{exc}") from None
    raise ConfigError(f"{source}: must be a string, not {type(value).__name__}")


def _check_event(name: str) -> str:
    if name not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {name!r}: one of {', '.join(EVENT_TYPES)}")
    return name


def _number(kind: str, value: object, meta: Mapping[str, Any], text: bool) -> int | float:
    number: int | float
    if text and isinstance(value, str):
        try:
            number = int(value) if kind == "int" else float(value)
        except ValueError:
            raise ValueError(f"is not {'an integer' if kind == 'int' else 'a number'}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value if kind == "int" else float(value)
    elif isinstance(value, float) and kind == "float":
        number = value
    else:
        raise ValueError(f"must be {'an integer' if kind == 'int' else 'a number'}")
    if not math.isfinite(number):
        raise ValueError("must be finite")
    low, high, above = meta["low"], meta.get("high"), meta.get("above", False)
    if high is not None and not low <= number <= high:
        raise ValueError(f"must be between {low} and {high}")
    if low is not None and (number <= low if above else number < low):
        raise ValueError(f"must be {'>' if above else '>='} {low}")
    return number


def _check_header(name: str) -> str:
    """A request header name (RFC 9110 token characters), lower-cased."""
    if not name or any(not (c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~")) for c in name):
        raise ValueError(f"{name!r} is not a header name")
    return name.lower()


def _check_origin(origin: str) -> str:
    # Browsers send origins lower-case and without a slash; match their spelling.
    normal = origin.rstrip("/").lower()
    if _ORIGIN_RE.fullmatch(normal) is None:
        raise ValueError(f"origin {origin!r} is not scheme://host[:port] (http or https)")
    return normal


def _check_network(item: str) -> str:
    """An IP address or CIDR network, written the canonical way (``::1/128``
    for ``::1``); host bits set (``10.0.0.1/8``) are refused, not widened."""
    TrustedProxies.of((item,))
    return str(ipaddress.ip_network(item.strip()))


BROKER_SCHEMES = ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://", "unix://")


def _check_broker(url: str) -> str:
    """``memory`` or a Redis URL; the message never shows the URL (it may
    hold a password)."""
    url = url.strip()
    if url == "memory":
        return url
    if url.startswith(BROKER_SCHEMES):
        from ..brokers.redis_errors import check_url

        with contextlib.suppress(ImportError):  # without redis-py the CLI says so
            check_url(url)
        return url
    raise ValueError("must be 'memory' or a URL starting with " + ", ".join(BROKER_SCHEMES))
