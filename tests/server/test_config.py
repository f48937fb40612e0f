"""Hub configuration: flags > environment > TOML file > defaults, and every error."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.processes import ServerProcess, api, assert_error, outline, poll
from torchannels import HistoryPolicy, Settings, TorChannelsError
from torchannels.server.config import (
    CONFIG_ENV,
    ConfigError,
    ServerConfig,
    add_arguments,
    env_name,
    load_config,
    system_backlog,
)

FIELDS = [f.name for f in dataclasses.fields(ServerConfig) if f.metadata["kind"] != "channels"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def load(
    argv: tuple[str, ...] = (), env: dict[str, str] | None = None, toml: str | None = None,
    tmp: Path | None = None,
) -> ServerConfig:  # fmt: skip
    env = dict(env or {})
    if toml is not None:
        assert tmp is not None
        path = tmp / "hub.toml"
        path.write_text(toml, encoding="utf-8")
        env[CONFIG_ENV] = str(path)
    return load_config(parse(*argv), env)


def error(argv: tuple[str, ...] = (), env: dict[str, str] | None = None, **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(argv, env, **kw)
    return str(info.value)


# -- defaults ------------------------------------------------------------------


def test_defaults() -> None:
    config = load_config(None, {})
    assert config == ServerConfig() == load()
    assert dataclasses.asdict(config) == {
        "host": "127.0.0.1",
        "port": 8090,
        "api_key": None,
        "token_secret": None,
        "token_public_key": None,
        "token_jwks_url": None,
        "token_audience": None,
        "token_issuer": None,
        "token_leeway": 0.0,
        "proxy_connect": None,
        "proxy_subscribe": None,
        "proxy_publish": None,
        "proxy_secret": None,
        "proxy_timeout": 3.0,
        "proxy_max_in_flight": 64,
        "proxy_headers": (),
        "webhook_url": None,
        "webhook_secret": None,
        "webhook_events": (),
        "webhook_retry_for": 600.0,
        "webhook_timeout": 10.0,
        "webhook_queue_max": 100000,
        "outbox": None,
        "outbox_table": "torchannels_outbox",
        "outbox_batch": 100,
        "outbox_retention": 0.0,
        "admin_password": None,
        "admin": True,
        "broker": "memory",
        "redis_prefix": "torchannels",
        "workers": 1,
        "channel_limit": 100000,
        "anonymous": ("demo:*",),
        "history_size": 1000,
        "history_ttl": 3600.0,
        "history_meta_ttl": 604800.0,
        "max_channels": 64,
        "max_request_bytes": 16384,
        "max_publish_bytes": 65536,
        "idempotency_window": 600.0,
        "max_client_publish_bytes": 16384,
        "client_publish_rate": 10.0,
        "longpoll_timeout": 25.0,
        "ping_interval": 15.0,
        "stream_max_bytes": 1048576,
        "max_pending_bytes": 1048576,
        "write_timeout": 30.0,
        "header_timeout": 10.0,
        "body_timeout": 60.0,
        "backlog": 0,
        "max_connections": 0,
        "max_connections_per_ip": 0,
        "internal_port": None,
        "internal_host": "127.0.0.1",
        "allowed_origins": (),
        "cors_credentials": False,
        "dev": False,
        "trusted_proxies": (),
        "demo": True,
        "metrics": False,
        "shutdown_timeout": 10.0,
        "log_level": "info",
        "event_loop": "asyncio",
        "presence_grace": 5.0,
        "presence_ttl": 30.0,
        "channels": (),
    }


def test_hooks_need_a_secret_and_http_urls() -> None:
    with pytest.raises(ConfigError, match="--proxy-secret"):
        load(("--proxy-connect", "http://127.0.0.1:1/connect")).check_serving()
    assert "not an http(s) URL" in error(("--proxy-publish", "ftp://x"))
    config = load(("--proxy-headers", "User-Agent, X-Real-IP", "--proxy-secret", "s",
                   "--proxy-subscribe", "https://app/hook"))  # fmt: skip
    config.check_serving()
    assert config.proxy_headers == ("user-agent", "x-real-ip")
    assert "is not a header name" in error(("--proxy-headers", "bad header"))


def test_unset_flags_parse_to_none() -> None:
    assert all(value is None for value in vars(parse()).values())
    assert set(vars(parse())) == {"config", *FIELDS}


# -- precedence ----------------------------------------------------------------

# field: (TOML line, env value, flags, then the value each of those layers gives)
LAYERS: dict[str, tuple[str, str, tuple[str, ...], Any, Any, Any]] = {
    "host": ('host = "10.0.0.1"', "10.0.0.2", ("--host", "::1"), "10.0.0.1", "10.0.0.2", "::1"),
    "port": ("port = 9001", "9002", ("--port", "9003"), 9001, 9002, 9003),
    "api_key": ('api-key = "k1"', "k2", ("--api-key", "k3"), "k1", "k2", "k3"),
    "token_secret": ('token_secret = "s1"', "s2", ("--token-secret", "s3"), "s1", "s2", "s3"),
    "token_public_key": (
        'token_public_key = "k1.pem"',
        "k2.pem",
        ("--token-public-key", "k3.pem"),
        "k1.pem",
        "k2.pem",
        "k3.pem",
    ),
    "token_jwks_url": (
        'token-jwks-url = "https://a/jwks"',
        "https://b/jwks",
        ("--token-jwks-url", "https://c/jwks"),
        "https://a/jwks",
        "https://b/jwks",
        "https://c/jwks",
    ),
    "token_audience": ('token_audience = "a1"', "a2", ("--token-audience", "a3"), "a1", "a2", "a3"),
    "token_issuer": ('token_issuer = "i1"', "i2", ("--token-issuer", "i3"), "i1", "i2", "i3"),
    "token_leeway": ("token_leeway = 1", "2.5", ("--token-leeway", "3"), 1.0, 2.5, 3.0),
    "admin_password": ('admin-password = "p1"', "p2", ("--admin-password", "p3"), "p1", "p2", "p3"),
    "admin": ("admin = false", "on", ("--no-admin",), False, True, False),
    "broker": (
        'broker = "redis://a:1/0"',
        "rediss://b:2/1",
        ("--broker", "redis+cluster://c:3"),
        "redis://a:1/0",
        "rediss://b:2/1",
        "redis+cluster://c:3",
    ),
    "redis_prefix": ('redis-prefix = "p1"', "p2", ("--redis-prefix", "p3"), "p1", "p2", "p3"),
    "workers": ("workers = 2", "3", ("--workers", "4"), 2, 3, 4),
    "channel_limit": ("channel_limit = 10", "20", ("--channel-limit", "30"), 10, 20, 30),
    "anonymous": (
        'anonymous = ["file:*", "lobby"]',
        "env:*, x ,",
        ("--anonymous", "flag:*", "--anonymous", "y,z"),
        ("file:*", "lobby"),
        ("env:*", "x"),
        ("flag:*", "y", "z"),
    ),
    "history_size": ("history-size = 0", "2", ("--history-size", "3"), 0, 2, 3),
    "history_ttl": ("history_ttl = 60", "2.5", ("--history-ttl", "1e3"), 60.0, 2.5, 1000.0),
    "history_meta_ttl": (
        "history_meta_ttl = 86400",
        "0",
        ("--history-meta-ttl", "3e5"),
        86400.0,
        0.0,
        300000.0,
    ),
    "max_channels": ("max_channels = 1", "2", ("--max-channels", "3"), 1, 2, 3),
    "max_request_bytes": ("max-request-bytes = 9", "200", ("--max-request-bytes", "3"), 9, 200, 3),
    "max_publish_bytes": ("max_publish_bytes = 9", "200", ("--max-publish-bytes", "3"), 9, 200, 3),
    "idempotency_window": (
        "idempotency-window = 60",
        "0.5",
        ("--idempotency-window", "1e3"),
        60.0,
        0.5,
        1000.0,
    ),
    "longpoll_timeout": ("longpoll_timeout = 0.5", "1", ("--longpoll-timeout", "2"), 0.5, 1, 2),
    "ping_interval": ("ping-interval = 1.5", "2.5", ("--ping-interval", "3.5"), 1.5, 2.5, 3.5),
    "stream_max_bytes": ("stream_max_bytes = 9", "8", ("--stream-max-bytes", "7"), 9, 8, 7),
    "max_pending_bytes": ("max-pending-bytes = 6", "5", ("--max-pending-bytes", "4"), 6, 5, 4),
    "write_timeout": ("write_timeout = 1.5", "2", ("--write-timeout", "3"), 1.5, 2.0, 3.0),
    "header_timeout": ("header-timeout = 1", "2.5", ("--header-timeout", "3"), 1.0, 2.5, 3.0),
    "body_timeout": ("body_timeout = 4", "5", ("--body-timeout", "6.5"), 4.0, 5.0, 6.5),
    "backlog": ("backlog = 10", "20", ("--backlog", "30"), 10, 20, 30),
    "max_connections": ("max-connections = 10", "20", ("--max-connections", "30"), 10, 20, 30),
    "max_connections_per_ip": (
        "max-connections-per-ip = 1",
        "2",
        ("--max-connections-per-ip", "3"),
        1,
        2,
        3,
    ),
    "internal_port": ("internal_port = 9101", "0", ("--internal-port", "9103"), 9101, 0, 9103),
    "internal_host": (
        'internal-host = "10.0.0.5"',
        "::1",
        ("--internal-host", "0.0.0.0"),
        "10.0.0.5",
        "::1",
        "0.0.0.0",
    ),
    "allowed_origins": (
        'allowed_origins = ["https://a.example"]',
        "https://B.example/,http://c.example:8080",
        ("--allowed-origins", "https://d.example"),
        ("https://a.example",),
        ("https://b.example", "http://c.example:8080"),
        ("https://d.example",),
    ),
    "cors_credentials": (
        "cors_credentials = true",
        "no",
        ("--cors-credentials",),
        True,
        False,
        True,
    ),
    "dev": ("dev = true", "0", ("--dev",), True, False, True),
    "trusted_proxies": (
        'trusted-proxies = ["10.0.0.0/8"]',
        "127.0.0.1, ::1",
        ("--trusted-proxies", "192.168.0.0/16", "--trusted-proxies", "fd00::/8"),
        ("10.0.0.0/8",),
        ("127.0.0.1/32", "::1/128"),
        ("192.168.0.0/16", "fd00::/8"),
    ),
    "demo": ("demo = false", "yes", ("--no-demo",), False, True, False),
    "metrics": ("metrics = true", "off", ("--metrics",), True, False, True),
    "shutdown_timeout": ("shutdown_timeout = 0", "1", ("--shutdown-timeout", "2"), 0.0, 1, 2),
    "log_level": (
        "log-level='debug'",
        "WARNING",
        ("--log-level", "Error"),
        "debug",
        "warning",
        "error",
    ),
    "event_loop": (
        "event-loop = 'uvloop'",
        "ASYNCIO",
        ("--event-loop", "uvloop"),
        "uvloop",
        "asyncio",
        "uvloop",
    ),
    "presence_grace": ("presence_grace = 1", "2.5", ("--presence-grace", "0"), 1.0, 2.5, 0.0),
    "presence_ttl": ("presence-ttl = 60", "10", ("--presence-ttl", "3"), 60.0, 10.0, 3.0),
    "max_client_publish_bytes": (
        "max_client_publish_bytes = 1",
        "2",
        ("--max-client-publish-bytes", "3"),
        1,
        2,
        3,
    ),
    "client_publish_rate": (
        "client-publish-rate = 1",
        "2.5",
        ("--client-publish-rate", "4"),
        1.0,
        2.5,
        4.0,
    ),
    "proxy_connect": (
        'proxy_connect = "http://a/c"',
        "http://b/c",
        ("--proxy-connect", "http://c/c"),
        "http://a/c",
        "http://b/c",
        "http://c/c",
    ),
    "proxy_subscribe": (
        'proxy_subscribe = "http://a/s"',
        "http://b/s",
        ("--proxy-subscribe", "https://c/s"),
        "http://a/s",
        "http://b/s",
        "https://c/s",
    ),
    "proxy_publish": (
        'proxy-publish = "http://a/p"',
        "http://b/p",
        ("--proxy-publish", "http://c/p"),
        "http://a/p",
        "http://b/p",
        "http://c/p",
    ),
    "proxy_secret": ('proxy_secret = "s1"', "s2", ("--proxy-secret", "s3"), "s1", "s2", "s3"),
    "proxy_timeout": ("proxy_timeout = 1", "2", ("--proxy-timeout", "0.5"), 1.0, 2.0, 0.5),
    "proxy_max_in_flight": (
        "proxy_max_in_flight = 1",
        "2",
        ("--proxy-max-in-flight", "3"),
        1,
        2,
        3,
    ),
    "proxy_headers": (
        'proxy_headers = ["X-A"]',
        "X-B, x-c",
        ("--proxy-headers", "X-D"),
        ("x-a",),
        ("x-b", "x-c"),
        ("x-d",),
    ),
    "webhook_url": (
        'webhook_url = "http://a/h"',
        "http://b/h",
        ("--webhook-url", "https://c/h"),
        "http://a/h",
        "http://b/h",
        "https://c/h",
    ),
    "webhook_secret": ('webhook_secret = "w1"', "w2", ("--webhook-secret", "w3"), "w1", "w2", "w3"),
    "webhook_events": (
        'webhook_events = ["user_online"]',
        "user_offline, channel_vacated",
        ("--webhook-events", "member_left"),
        ("user_online",),
        ("user_offline", "channel_vacated"),
        ("member_left",),
    ),
    "webhook_retry_for": (
        "webhook_retry_for = 1",
        "2",
        ("--webhook-retry-for", "0"),
        1.0,
        2.0,
        0.0,
    ),
    "webhook_timeout": ("webhook_timeout = 1", "2", ("--webhook-timeout", "3.5"), 1.0, 2.0, 3.5),
    "webhook_queue_max": (
        "webhook_queue_max = 10",
        "20",
        ("--webhook-queue-max", "30"),
        10,
        20,
        30,
    ),
    "outbox": (
        'outbox = "dbname=a"',
        "postgresql://b@127.0.0.1/b",
        ("--outbox", "host=c dbname=c"),
        "dbname=a",
        "postgresql://b@127.0.0.1/b",
        "host=c dbname=c",
    ),
    "outbox_table": (
        'outbox_table = "a_outbox"',
        "b_outbox",
        ("--outbox-table", "c_outbox"),
        "a_outbox",
        "b_outbox",
        "c_outbox",
    ),
    "outbox_batch": ("outbox_batch = 1", "1000", ("--outbox-batch", "10000"), 1, 1000, 10000),
    "outbox_retention": (
        "outbox_retention = 60",
        "0.5",
        ("--outbox-retention", "86400"),
        60.0,
        0.5,
        86400.0,
    ),
}


def test_webhooks_need_a_secret_events_and_an_http_url() -> None:
    with pytest.raises(ConfigError, match="--webhook-url needs --webhook-secret"):
        ServerConfig(webhook_url="http://a/h", webhook_events=("user_online",)).check_serving()
    with pytest.raises(ConfigError, match="--webhook-url needs --webhook-events"):
        ServerConfig(webhook_url="http://a/h", webhook_secret="s").check_serving()
    assert "'user_away'" in error(("--webhook-events", "user_online,user_away"))
    assert "not an http(s) URL" in error(("--webhook-url", "ftp://a/h"))
    assert "must be >= 0" in error(("--webhook-retry-for", "-1"))
    ServerConfig(
        webhook_url="http://a/h", webhook_secret="s", webhook_events=("user_online",)
    ).check_serving()


def test_outbox_options_are_checked() -> None:
    assert "invalid outbox table name 'Orders'" in error(("--outbox-table", "Orders"))
    assert "invalid outbox table name 'public.outbox'" in error(("--outbox-table", "public.outbox"))
    assert "must be between 1 and 10000" in error(("--outbox-batch", "0"))
    assert "must be >= 0" in error(("--outbox-retention", "-1"))
    # The DSN may hold a password: it is never shown, in repr() or errors.
    config = ServerConfig(outbox="postgresql://app:pw@db/app")
    assert "pw" not in repr(config)


def test_layers_cover_every_field() -> None:
    assert sorted(LAYERS) == sorted(FIELDS)


@pytest.mark.parametrize("name", FIELDS)
def test_precedence(name: str, tmp_path: Path) -> None:
    line, env_value, flags, from_file, from_env, from_flag = LAYERS[name]
    env = {env_name(name): env_value}
    default = getattr(ServerConfig(), name)
    # Each layer changes the value, so each one is seen to win.
    assert default != from_file != from_env != from_flag
    assert getattr(load(), name) == default
    assert getattr(load(toml=line, tmp=tmp_path), name) == from_file
    assert getattr(load(env=env), name) == from_env
    assert getattr(load(env=env, toml=line, tmp=tmp_path), name) == from_env
    assert getattr(load(flags), name) == from_flag
    assert getattr(load(flags, toml=line, tmp=tmp_path), name) == from_flag
    assert getattr(load(flags, env, toml=line, tmp=tmp_path), name) == from_flag
    # The other fields keep their defaults.
    others = {f: getattr(load(flags, env, toml=line, tmp=tmp_path), f) for f in FIELDS}
    del others[name]
    assert others == {f: getattr(ServerConfig(), f) for f in FIELDS if f != name}


def test_layers_combine_field_by_field(tmp_path: Path) -> None:
    config = load(
        ("--port", "9003"),
        {"TORCHANNELS_HOST": "0.0.0.0", "TORCHANNELS_PORT": "9002"},
        toml="port = 9001\nhost = '10.0.0.1'\nmax_channels = 5\n",
        tmp=tmp_path,
    )
    assert (config.port, config.host, config.max_channels) == (9003, "0.0.0.0", 5)


def test_config_flag_beats_config_env(tmp_path: Path) -> None:
    (tmp_path / "flag.toml").write_text("port = 1111\n")
    (tmp_path / "env.toml").write_text("port = 2222\nmax_channels = 7\n")
    env = {CONFIG_ENV: str(tmp_path / "env.toml")}
    assert load_config(parse(), env).port == 2222
    config = load_config(parse("--config", str(tmp_path / "flag.toml")), env)
    assert (config.port, config.max_channels) == (1111, 64)
    # An empty --config drops the environment's file.
    assert load_config(parse("--config", ""), env) == ServerConfig()
    assert load_config(None, {CONFIG_ENV: ""}) == ServerConfig()


def test_empty_values_switch_off_lower_layers(tmp_path: Path) -> None:
    toml = 'api_key = "k"\ntoken_secret = "s"\nanonymous = ["a*"]\nallowed_origins = ["http://x"]'
    env = {env_name(f): "" for f in ("api_key", "token_secret", "anonymous", "allowed_origins")}
    config = load(env=env, toml=toml, tmp=tmp_path)
    assert (config.api_key, config.token_secret, config.anonymous) == (None, None, ())
    assert config.allowed_origins == ()
    flags = ("--api-key", "", "--anonymous", "")
    config = load(flags, toml=toml, tmp=tmp_path)
    assert (config.api_key, config.token_secret, config.anonymous) == (None, "s", ())


async def test_empty_value_switches_off_a_lower_layer_in_a_running_hub(
    spawn: Callable[..., ServerProcess], http: Any, tmp_path: Path
) -> None:
    toml = tmp_path / "hub.toml"
    toml.write_text('api_key = "file-key"\ntoken_secret = "s"\n')
    hub = spawn("--config", str(toml), "--anonymous=", "--no-demo",
                env={"TORCHANNELS_API_KEY": ""})  # fmt: skip
    response = await api(http, hub, "/api/publish", {"channel": "a", "data": {}}, key="file-key")
    assert_error(response, 403, "api_disabled")
    doc = await poll(http, hub, ["demo:chat"])  # no anonymous channels at all now
    assert outline(doc["frames"]) == [("error", "demo:chat", "token_required")]


def test_an_empty_internal_port_switches_it_off(tmp_path: Path) -> None:
    config = load(env={env_name("internal_port"): ""}, toml="internal-port = 9101", tmp=tmp_path)
    assert config.internal_port is None
    assert load(("--internal-port", ""), {env_name("internal_port"): "0"}).internal_port is None
    assert load(toml='internal_port = ""', tmp=tmp_path).internal_port is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--internal-port", "-1"), "--internal-port: '-1' must be between 0 and 65535"),
        (("--internal-port", "x"), "--internal-port: 'x' is not an integer"),
        (("--max-connections-per-ip", "-1"), "--max-connections-per-ip: '-1' must be >= 0"),
        (("--port", "9000", "--internal-port", "9000"), "--internal-port 9000 is --port too"),
    ],
)
def test_bad_listener_options_are_refused(flags: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(flags)


def test_namespace_may_hold_other_options() -> None:
    args = argparse.Namespace(command="serve", verbose=True, port="9000")
    assert load_config(args, {}).port == 9000


def test_native_flag_values_are_accepted() -> None:
    # A caller's parser may already have converted types.
    args = argparse.Namespace(port=9000, history_ttl=5, demo=False, anonymous=["a*", "b"])
    config = load_config(args, {})
    assert (config.port, config.history_ttl, config.demo, config.anonymous) == (
        9000,
        5.0,
        False,
        ("a*", "b"),
    )


# -- booleans and lists --------------------------------------------------------

TRUE = ["1", "true", "TRUE", "yes", "Yes", "on", " on "]
FALSE = ["0", "false", "False", "no", "NO", "off", "Off "]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, True) for t in TRUE] + [(f, False) for f in FALSE]
)
@pytest.mark.parametrize("name", ["demo", "metrics"])
def test_boolean_env_values(name: str, text: str, expected: bool) -> None:
    assert getattr(load_config(None, {env_name(name): text}), name) is expected


@pytest.mark.parametrize(
    ("argv", "expected"), [(("--demo",), True), (("--no-demo",), False), ((), True)]
)
def test_boolean_flags(argv: tuple[str, ...], expected: bool) -> None:
    assert load_config(parse(*argv), {"TORCHANNELS_DEMO": "on"}).demo is expected
    assert load_config(parse(*argv), {"TORCHANNELS_DEMO": "off"}).demo is (
        expected if argv else False
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        (",", ()),
        ("a", ("a",)),
        ("a,b", ("a", "b")),
        (" a , b ,, ", ("a", "b")),
        ("b*,a,b*", ("b*", "a")),
        ("*", ("*",)),
    ],
)
def test_list_env_values(text: str, expected: tuple[str, ...]) -> None:
    assert load_config(None, {"TORCHANNELS_ANONYMOUS": text}).anonymous == expected


def test_repeated_list_flags_accumulate() -> None:
    args = parse("--anonymous", "a*", "--anonymous", "b,c", "--anonymous", "a*")
    assert load_config(args, {}).anonymous == ("a*", "b", "c")


# -- errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("port", "-1", "'-1' must be between 0 and 65535"),
        ("port", "65536", "'65536' must be between 0 and 65535"),
        ("port", "http", "'http' is not an integer"),
        ("port", "80.5", "'80.5' is not an integer"),
        ("port", "", "'' is not an integer"),
        ("history_size", "-1", "'-1' must be >= 0"),
        ("history_ttl", "0", "'0' must be > 0"),
        ("history_ttl", "nan", "'nan' must be finite"),
        ("history_ttl", "inf", "'inf' must be finite"),
        ("history_ttl", "1h", "'1h' is not a number"),
        ("history_meta_ttl", "-1", "'-1' must be >= 0"),
        ("max_channels", "0", "'0' must be >= 1"),
        ("max_request_bytes", "-5", "'-5' must be >= 1"),
        ("max_publish_bytes", "1e3", "'1e3' is not an integer"),
        ("idempotency_window", "0", "'0' must be > 0"),
        ("longpoll_timeout", "0", "'0' must be > 0"),
        ("ping_interval", "-1", "'-1' must be > 0"),
        ("shutdown_timeout", "-0.1", "'-0.1' must be >= 0"),
        ("host", "", "'' must not be empty"),
        ("log_level", "loud", "'loud' must be one of debug, info, warning, error, critical"),
        ("event_loop", "trio", "'trio' must be one of asyncio, uvloop"),
        ("demo", "2", "'2' must be a boolean (1/0, true/false, yes/no, on/off)"),
        ("metrics", "", "'' must be a boolean"),
        ("anonymous", "ok:*,a*b", "invalid channel pattern 'a*b': '*' may only end it"),
        ("anonymous", "has space", "invalid channel name 'has space'"),
        ("allowed_origins", "example.com", "origin 'example.com' is not scheme://host[:port]"),
        ("allowed_origins", "https://a/b", "origin 'https://a/b' is not scheme://host[:port]"),
        ("allowed_origins", "ftp://a", "origin 'ftp://a' is not scheme://host[:port]"),
        (
            "trusted_proxies",
            "10.0.0.1/8",
            "trusted proxy '10.0.0.1/8' is not an IP address or CIDR network",
        ),
        ("trusted_proxies", "proxy.local", "trusted proxy 'proxy.local' is not an IP address"),
    ],
)
def test_bad_values_name_env_var_and_flag(name: str, value: str, problem: str) -> None:
    message = error(env={env_name(name): value})
    assert message.startswith(f"{env_name(name)}: {problem}"), message
    flag = "--" + name.replace("_", "-")
    if name not in ("demo", "metrics"):  # boolean flags take no value
        assert error((flag, value)).startswith(f"{flag}: {problem}")


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("prot = 8090", "unknown key 'prot'; did you mean 'port'?"),
        ("zzz = 1", "unknown key 'zzz'"),
        ("config = 'x.toml'", "unknown key 'config'"),
        ("[server]\nport = 1", "unknown key 'server'"),
        ("api-key = 'a'\napi_key = 'b'", "key 'api_key' is given twice"),
        ("port = '8090'", "key 'port': '8090' must be an integer"),
        ("port = 80.0", "key 'port': 80.0 must be an integer"),
        ("port = true", "key 'port': True must be an integer"),
        ("port = 70000", "key 'port': 70000 must be between 0 and 65535"),
        ("history_ttl = true", "key 'history_ttl': True must be a number"),
        ("history_ttl = nan", "key 'history_ttl': nan must be finite"),
        ("history_size = -3", "key 'history_size': -3 must be >= 0"),
        ("demo = 'yes'", "key 'demo': 'yes' must be a boolean"),
        ("demo = 1", "key 'demo': 1 must be a boolean"),
        ("anonymous = 'demo:*'", "key 'anonymous': must be a list of strings"),
        ("anonymous = [1]", "key 'anonymous': must be a list of strings"),
        ("anonymous = ['a*b']", "key 'anonymous': invalid channel pattern 'a*b'"),
        ("allowed_origins = [['x']]", "key 'allowed_origins': must be a list of strings"),
        ("host = 1", "key 'host': must be a string, not int"),
        ("log_level = 'LOUD'", "key 'log_level': 'LOUD' must be one of"),
        ("anonymous = ['a,b']", "key 'anonymous': invalid channel name 'a,b'"),
        ("host = ''", "key 'host': '' must not be empty"),
        ("api_key = 12345", "key 'api_key': must be a string, not int"),
        ("token_secret = ['s']", "key 'token_secret': must be a string, not list"),
        ("port = ", "(from TORCHANNELS_CONFIG) is not TOML: Invalid value"),
        ("port = 1\nport = 2", "is not TOML: Cannot overwrite a value"),
    ],
)
def test_bad_file_values_name_file_and_key(toml: str, problem: str, tmp_path: Path) -> None:
    message = error(toml=toml, tmp=tmp_path)
    assert message.startswith(f"config file {str(tmp_path / 'hub.toml')!r}"), message
    assert problem in message, message
    assert "12345" not in message  # secrets are never echoed


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_bytes(b'host = "\xff"\n')
    message = error(("--config", str(tmp_path / "bad.toml")))
    assert "bad.toml' (from --config) is not TOML" in message


@pytest.mark.parametrize("via", ["flag", "env"])
def test_missing_file(via: str, tmp_path: Path) -> None:
    path = str(tmp_path / "missing.toml")
    if via == "flag":
        message = error(("--config", path))
        assert message == f"config file {path!r} (from --config): No such file or directory"
    else:
        message = error(env={CONFIG_ENV: path})
        assert message == f"config file {path!r} (from {CONFIG_ENV}): No such file or directory"
    assert error(("--config", str(tmp_path))).endswith("Is a directory")


def test_config_error_is_a_torchannels_error_and_a_value_error() -> None:
    with pytest.raises(TorChannelsError):
        load_config(None, {"TORCHANNELS_PORT": "x"})
    with pytest.raises(ValueError):
        load_config(None, {"TORCHANNELS_PORT": "x"})


def test_direct_construction_is_checked_and_normalised() -> None:
    with pytest.raises(ConfigError, match=r"ServerConfig\(port=...\): -1 must be between"):
        ServerConfig(port=-1)
    with pytest.raises(ConfigError, match="invalid channel"):
        ServerConfig(anonymous=("a b",))
    # A list where a tuple is declared, on purpose: it is normalised.
    anonymous: Any = ["a*", "a*"]
    config = ServerConfig(anonymous=anonymous, log_level="DEBUG", api_key="")
    assert (config.anonymous, config.log_level, config.api_key) == (("a*",), "debug", None)


def test_secrets_stay_out_of_repr() -> None:
    text = repr(ServerConfig(api_key="key-123", token_secret="secret-456"))
    assert "key-123" not in text and "secret-456" not in text
    assert "port=8090" in text


# -- derived objects and help --------------------------------------------------


def test_core_objects() -> None:
    config = ServerConfig(
        max_channels=3,
        max_request_bytes=100,
        longpoll_timeout=2,
        ping_interval=1,
        allowed_origins=("https://a.example",),
        cors_credentials=True,
        trusted_proxies=("10.0.0.0/8",),
        history_size=5,
        history_ttl=6,
        anonymous=("pub:*",),
    )
    assert config.settings() == Settings(
        max_channels=3,
        max_request_bytes=100,
        longpoll_timeout=2,
        ping_interval=1,
        allowed_origins=("https://a.example",),
        cors_credentials=True,
        trusted_proxies=("10.0.0.0/8",),
        client_id_secret=config.client_id_secret(),
    )
    assert config.history() == HistoryPolicy(size=5, ttl=6)
    assert config.anonymous == ("pub:*",)
    limits = ServerConfig(stream_max_bytes=7, max_pending_bytes=8, write_timeout=9).settings()
    assert (limits.stream_max_bytes, limits.max_pending_bytes, limits.write_timeout) == (7, 8, 9)


def test_help_mentions_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    parser = argparse.ArgumentParser(prog="torchannels serve")
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "--config PATH" in text and CONFIG_ENV in text
    for name in FIELDS:
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        assert f"env {env_name(name)}; default: " in text, name
    for shown in [
        "default: 127.0.0.1]",
        "default: 8090]",
        "TORCHANNELS_API_KEY; default: unset]",
        "default: demo:*]",
        "TORCHANNELS_ALLOWED_ORIGINS; default: none]",
        "--demo, --no-demo",
        "TORCHANNELS_DEMO; default: on]",
        "TORCHANNELS_METRICS; default: off]",
        "default: 3600.0]",
        "default: info]",
    ]:
        assert shown in text, shown


# -- listen backlog ------------------------------------------------------------


def test_system_backlog_reads_somaxconn_else_socket_somaxconn(tmp_path: Path) -> None:
    path = tmp_path / "somaxconn"
    path.write_text("8192\n")
    assert system_backlog(str(path)) == 8192
    for bad in ("", "many\n", "0\n", "-1\n"):
        path.write_text(bad)
        assert system_backlog(str(path)) == socket.SOMAXCONN
    assert system_backlog(str(tmp_path / "missing")) == socket.SOMAXCONN
    assert ServerConfig(backlog=7).listen_backlog() == 7
    assert ServerConfig().listen_backlog() == system_backlog()


def listen_queue(port: int) -> int:
    """The backlog of the socket listening on ``port``, as the kernel holds it
    (``ss`` shows it as Send-Q of a listening socket)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=10, check=True).stdout  # fmt: skip
    queues = {int(line.split()[2]) for line in out.splitlines() if line.strip()}
    assert len(queues) == 1, out
    return queues.pop()


def test_serve_listens_with_the_configured_backlog(
    spawn: Callable[..., ServerProcess],
) -> None:
    # The default is the system's maximum, not Tornado's 128. (``ss`` comes
    # with Debian's iproute2; without it this fails rather than skips.)
    assert shutil.which("ss") is not None, "ss (iproute2) is needed to read a listen backlog"
    assert listen_queue(spawn("--no-demo").port) == system_backlog()
    assert listen_queue(spawn("--no-demo", "--backlog", "7").port) == 7
