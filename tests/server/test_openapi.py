"""openapi.json matches the app: every route documented, every documented answer produced."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import tornado.httpclient
import tornado.routing
import tornado.web
import tornado.websocket

from server.processes import (
    KEY,
    LIMIT,
    ServerProcess,
    api,
    as_json,
    fetch,
    openapi,
)
from torchannels.server import api as api_module
from torchannels.server import channels_api, control_api
from torchannels.server.app import make_app
from torchannels.server.config import ServerConfig


def validate(value: Any, schema: Mapping[str, Any], doc: Mapping[str, Any], at: str = "$") -> None:
    """A small JSON Schema check: $ref, oneOf, type, required, properties,
    items, minimum, minItems, pattern (what openapi.json uses)."""
    if "$ref" in schema:
        target: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        validate(value, target, doc, at)
        return
    if "oneOf" in schema:
        fits = 0
        for option in schema["oneOf"]:
            try:
                validate(value, option, doc, at)
                fits += 1
            except AssertionError:
                pass
        assert fits == 1, f"{at}: {value!r} fits {fits} of oneOf"
        return
    kinds: dict[str, type | tuple[type, ...]] = {
        "object": dict, "array": list, "string": str, "boolean": bool,
        "integer": int, "number": (int, float), "null": type(None),
    }  # fmt: skip
    if "type" in schema:
        kind = schema["type"]
        assert isinstance(value, kinds[kind]), f"{at}: {value!r} is not {kind}"
        assert kind == "boolean" or not isinstance(value, bool), f"{at}: {value!r} is a bool"
    if "minimum" in schema:
        assert value >= schema["minimum"], f"{at}: {value!r} < minimum"
    if "minItems" in schema:
        assert len(value) >= schema["minItems"], f"{at}: too few items"
    if "pattern" in schema:
        assert re.search(schema["pattern"], value), f"{at}: {value!r} !~ {schema['pattern']}"
    for name in schema.get("required", ()):
        assert name in value, f"{at}: {name!r} missing from {value!r}"
    for name, sub in schema.get("properties", {}).items():
        if name in value:
            validate(value[name], sub, doc, f"{at}.{name}")
    if "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], doc, f"{at}[{i}]")


def sample_path(template: str) -> str:
    return template.replace("{channel}", "chat:lobby")


def api_rules() -> list[tuple[re.Pattern[str], type[tornado.web.RequestHandler]]]:
    app = make_app(ServerConfig(api_key="k", token_secret="s", metrics=True))
    rules = []
    for rule in app.wildcard_router.rules:
        assert isinstance(rule.matcher, tornado.routing.PathMatches), rule
        regex = rule.matcher.regex
        if regex.pattern.startswith("/api/"):
            rules.append((regex, rule.target))
    return rules


METHODS = ("get", "post", "put", "patch", "delete")


def implemented(handler: type[tornado.web.RequestHandler]) -> set[str]:
    return {m for m in METHODS if getattr(handler, m) is not getattr(tornado.web.RequestHandler, m)}


def test_every_documented_operation_is_routed_and_every_api_route_documented() -> None:
    doc = openapi()
    rules = api_rules()
    for template, operations in doc["paths"].items():
        path = sample_path(template)
        handlers = [h for regex, h in rules if regex.fullmatch(path)]
        assert len(handlers) == 1, (template, handlers)
        assert implemented(handlers[0]) == set(operations), template
    for regex, handler in rules:
        if regex.pattern.startswith("/api/openapi"):
            continue  # the document itself, served as a file
        documented = [t for t in doc["paths"] if regex.fullmatch(sample_path(t))]
        assert documented, f"route {regex.pattern} ({handler.__name__}) is not in openapi.json"


async def test_served_openapi_is_the_packaged_document(
    main_server: ServerProcess, http: Any
) -> None:
    response = await fetch(http, main_server.base + "/api/openapi.json")  # no key needed
    assert response.code == 200
    doc = as_json(response)
    assert doc == openapi()
    assert doc["servers"] == [{"url": f"http://{ServerConfig().host}:{ServerConfig().port}"}]


@dataclasses.dataclass
class Call:
    """A request expected to give ``status`` (and error ``code``) for one
    documented operation."""

    template: str
    method: str
    status: int
    code: str | None
    hub: str = "main"  # "bare": no API key; "limited": one channel at most; "down": no Redis
    path: str | None = None
    body: Any = None
    raw: bytes | None = None
    key: str | None = KEY
    headers: dict[str, str] | None = None


def calls() -> list[Call]:
    pub, state, info = "/api/publish", "/api/state", "/api/channels/{channel}"
    lst, pres = "/api/channels", "/api/channels/{channel}/presence"
    big = json.dumps({"channel": "a", "data": {"p": "x" * LIMIT}}).encode()
    big_state = json.dumps({"channel": "a", "messages": [{"p": "x" * LIMIT}]}).encode()
    one = {"channel": "oa:one", "data": {"n": 1}}
    return [*control_calls(), *publish_calls(pub, state, info, lst, pres, big, big_state, one)]


def control_calls() -> list[Call]:
    """The control API's answers: ``/api/disconnect``, ``unsubscribe``, ``revoke``."""
    out: list[Call] = []
    huge = json.dumps({"user": "x" * 5000}).encode()
    bodies: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "/api/disconnect": ({"user": "oa-nobody"}, {"client": "c-1", "reconnect": True}),
        "/api/unsubscribe": (
            {"user": "oa-nobody", "channel": "oa"},
            {"client": "c", "channel": "o"},
        ),
        "/api/revoke": ({"user": "oa-nobody", "before": time.time()}, {"jti": "t", "expires": 4e9}),
    }
    for path, (ok, other) in bodies.items():
        out += [
            Call(path, "post", 200, None, body=ok),
            Call(path, "post", 200, None, body=other),
            Call(path, "post", 400, "bad_json", raw=b"["),
            Call(path, "post", 400, "unknown_field", body={**ok, "why": 1}),
            Call(path, "post", 400, "invalid_field", body={**ok, "user": 7}),
            Call(path, "post", 401, "unauthorized", body=ok, key=None),
            Call(path, "post", 403, "forbidden", body=ok, key="x"),
            Call(path, "post", 403, "api_disabled", body=ok, hub="bare"),
            Call(path, "post", 413, "payload_too_large", raw=huge),
            Call(path, "post", 503, "broker_unavailable", body=ok, hub="down"),
        ]
    bad_channel = {"user": "oa", "channel": "a b"}
    out.append(Call("/api/unsubscribe", "post", 400, "invalid_channel", body=bad_channel))
    return out


def publish_calls(
    pub: str, state: str, info: str, lst: str, pres: str, big: bytes, big_state: bytes,
    one: dict[str, Any],
) -> list[Call]:  # fmt: skip
    return [
        Call(pub, "post", 200, None, body=one),
        Call(pub, "post", 200, None, body={"channels": ["oa:1", "oa:2"], "data": {"n": 1}}),
        Call(pub, "post", 200, None, body={"messages": [one, {"channel": "oa:2", "data": {}}]}),
        Call(pub, "post", 200, None, body=one, headers={"Idempotency-Key": "oa-1"}),
        Call(pub, "post", 200, None, body=one, headers={"Idempotency-Key": "oa-1"}),  # duplicate
        Call(pub, "post", 200, None,
             body={"messages": [{**one, "idempotency_key": "oa-2"}, one]}),
        Call(pub, "post", 400, "invalid_idempotency_key", body=one,
             headers={"Idempotency-Key": "x" * 129}),
        Call(pub, "post", 400, "invalid_idempotency_key", body={"messages": [one]},
             headers={"Idempotency-Key": "oa-3"}),
        Call(pub, "post", 400, "invalid_idempotency_key",
             body={"messages": [{**one, "idempotency_key": ""}]}),
        Call(pub, "post", 400, "bad_json", raw=b"{"),
        Call(pub, "post", 400, "too_many_messages",
             raw=b'{"messages":[' + b",".join([b"0"] * (api_module.MAX_BATCH + 1)) + b"]}"),
        Call(pub, "post", 400, "invalid_channel",
             body={"messages": [one, {"channel": "a b", "data": {}}]}),
        Call(pub, "post", 400, "invalid_channel", body={"channel": "a b", "data": {}}),
        Call(pub, "post", 400, "invalid_message", body={"channel": "oa", "data": {"ts": 1}}),
        Call(pub, "post", 401, "unauthorized", body=one, key=None),
        Call(pub, "post", 403, "forbidden", body=one, key="wrong"),
        Call(pub, "post", 403, "api_disabled", body=one, hub="bare"),
        Call(pub, "post", 413, "payload_too_large", raw=big),
        Call(pub, "post", 503, "broker_unavailable", body=one, hub="down"),
        Call(pub, "post", 503, "channel_limit", body={"channels": ["l1", "l2"], "data": {}},
             hub="limited"),
        Call(state, "post", 200, None, body={"channel": "oa:s", "messages": [{"n": 1}]}),
        Call(state, "post", 400, "bad_json", body={"channel": "oa:s"}),
        Call(state, "post", 400, "invalid_channel", body={"channel": "", "messages": []}),
        Call(state, "post", 400, "invalid_message", body={"channel": "oa", "messages": [[]]}),
        Call(state, "post", 401, "unauthorized", body={"channel": "a", "messages": []}, key=None),
        Call(state, "post", 403, "forbidden", body={"channel": "a", "messages": []}, key="x"),
        Call(state, "post", 403, "api_disabled", body={"channel": "a", "messages": []},
             hub="bare"),
        Call(state, "post", 413, "payload_too_large", raw=big_state),
        Call(state, "post", 503, "broker_unavailable", body={"channel": "a", "messages": []},
             hub="down"),
        Call(state, "post", 503, "channel_limit", body={"channel": "l3", "messages": []},
             hub="limited"),
        Call(info, "get", 200, None, path="/api/channels/oa:one"),
        Call(info, "get", 400, "invalid_channel", path="/api/channels/a%20b"),
        Call(info, "get", 401, "unauthorized", path="/api/channels/oa", key=None),
        Call(info, "get", 403, "forbidden", path="/api/channels/oa", key="x"),
        Call(info, "get", 403, "api_disabled", path="/api/channels/oa", hub="bare"),
        Call(info, "get", 503, "broker_unavailable", path="/api/channels/oa", hub="down"),
        Call(lst, "get", 200, None, path="/api/channels?prefix=oa:&limit=1"),
        Call(lst, "get", 200, None, path="/api/channels?after=oa:one"),
        Call(lst, "get", 400, "invalid_limit", path="/api/channels?limit=1001"),
        Call(lst, "get", 400, "invalid_channel", path="/api/channels?prefix=a%20b"),
        Call(lst, "get", 401, "unauthorized", path=lst, key=None),
        Call(lst, "get", 403, "forbidden", path=lst, key="x"),
        Call(lst, "get", 403, "api_disabled", path=lst, hub="bare"),
        Call(lst, "get", 503, "broker_unavailable", path=lst, hub="down"),
        Call(info, "get", 200, None, path="/api/channels/pres:one"),  # with "presence"
        Call(pres, "get", 200, None, path="/api/channels/pres:one/presence"),
        Call(pres, "get", 200, None, path="/api/channels/pres:one/presence?limit=1000"),
        Call(pres, "get", 400, "presence_disabled", path="/api/channels/oa/presence"),
        Call(pres, "get", 400, "invalid_cursor", path="/api/channels/pres:one/presence?after=x"),
        Call(pres, "get", 400, "invalid_limit", path="/api/channels/pres:one/presence?limit=0"),
        Call(pres, "get", 400, "invalid_channel", path="/api/channels/a%20b/presence"),
        Call(pres, "get", 401, "unauthorized", path="/api/channels/pres:a/presence", key=None),
        Call(pres, "get", 403, "forbidden", path="/api/channels/pres:a/presence", key="x"),
        Call(pres, "get", 403, "api_disabled", path="/api/channels/pres:a/presence", hub="bare"),
        Call(pres, "get", 503, "broker_unavailable", path="/api/channels/pres:a/presence",
             hub="down"),
    ]  # fmt: skip


async def test_every_documented_status_and_code_is_produced(
    main_server: ServerProcess,
    bare_server: ServerProcess,
    limited_server: ServerProcess,
    down_server: ServerProcess,
    http: Any,
) -> None:
    servers = {"main": main_server, "bare": bare_server, "limited": limited_server,
               "down": down_server}  # fmt: skip
    doc = openapi()
    codes = {
        v
        for module in (api_module, channels_api, control_api)
        for k, v in vars(module).items()
        if k.isupper() and isinstance(v, str)
    }
    produced: dict[tuple[str, str, str], set[str]] = {}
    for call in calls():
        operation = doc["paths"][call.template][call.method]
        hub = servers[call.hub]
        if call.status == 200 and call.body is not None:  # we send what the doc describes
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            validate(call.body, schema, doc)
        response = await api(http, hub, call.path or call.template, call.body, key=call.key,
                             raw=call.raw, method=call.method.upper(),
                             headers=call.headers)  # fmt: skip
        body = as_json(response)
        assert response.code == call.status, (call, body)
        documented = operation["responses"][str(call.status)]
        validate(body, documented["content"]["application/json"]["schema"], doc)
        if call.code is not None:
            assert body["error"] == call.code, (call, body)
            assert f"`{call.code}`" in documented["description"], call
        produced.setdefault((call.template, call.method, str(call.status)), set()).update(
            [call.code] if call.code else []
        )
    expected = {}
    for template, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                named = set(re.findall(r"`([a-z_]+)`", response["description"])) & codes
                expected[(template, method, status)] = named
    assert produced == expected
