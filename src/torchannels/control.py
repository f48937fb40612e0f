"""Control commands: disconnect, unsubscribe and revoke, and the table of
those still in force in this process.

A :class:`Command` is made once (by ``hub.disconnect``, ``hub.unsubscribe``
or ``hub.revoke``, which the server's control API calls), stored by the
broker until it expires and delivered to every process
(:mod:`.brokers.control`). Each process keeps the commands in force in a
:class:`ControlTable` and applies each to its live connections as it
arrives (:mod:`.hub_control`). The table answers the questions a new
request asks: is this token revoked, was this polling client disconnected
or unsubscribed from a channel after it began?

The rules, one per kind, match a connection's
:class:`~torchannels.identity.Identity`:

- ``disconnect``: the connection's user (or client id) is the command's,
  and it began before the command (``since < at``);
- ``unsubscribe``: the same, for one channel;
- ``revoke`` of a user: the user's token was issued before ``at`` (the
  ``before`` time; a token with no ``iat`` counts as issued before any
  time);
- ``revoke`` of a token: the connection's token has the command's ``jti``.

Disconnects and unsubscribes stay in force for :data:`POLL_WINDOW`
seconds, the time within which a polling client (between two requests
when the command came) sends its next request. Revocations stay until
their ``expires``.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from .identity import Identity

DISCONNECT = "disconnect"
UNSUBSCRIBE = "unsubscribe"
REVOKE = "revoke"
KINDS = (DISCONNECT, UNSUBSCRIBE, REVOKE)

#: Seconds a disconnect or unsubscribe stays in force for polling clients.
POLL_WINDOW = 60.0
#: Seconds a user revocation lasts by default after its ``before`` time.
REVOKE_TTL = 86400.0
#: Most commands in force at once; past it the soonest to expire go first.
MAX_COMMANDS = 100_000
#: Longest user id, client id or token id the control calls take.
MAX_ID = 256
#: A Unix time in seconds above this is taken to be milliseconds (year 5138).
MAX_SECONDS = 1e11


@dataclass(frozen=True, slots=True)
class Command:
    """One control command. ``at``: when it was issued (a user revocation:
    its ``before`` time); ``expires``: when every process forgets it."""

    id: str
    kind: str
    at: float
    expires: float
    user: str | None = None
    client: str | None = None
    channel: str | None = None
    jti: str | None = None
    reconnect: bool = False

    def encode(self) -> bytes:
        """Compact JSON, what the broker stores and sends."""
        fields = {k: v for k, v in asdict(self).items() if v is not None and v is not False}
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes | str) -> Command:
        """The command ``data`` encodes; ValueError for anything else."""
        try:
            fields = json.loads(data)
            if not isinstance(fields, dict) or fields.get("kind") not in KINDS:
                raise ValueError("not a control command")
            return cls(**fields)
        except (TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a control command: {exc}") from None

    def matches(self, identity: Identity) -> bool:
        """Whether this command concerns ``identity``'s connection (the
        rules in the module docstring)."""
        user = identity.user.id if identity.user is not None else None
        if self.kind == REVOKE:
            if self.jti is not None:
                return identity.token_id == self.jti
            return user == self.user and (identity.issued is None or identity.issued < self.at)
        if self.user is not None and user != self.user:
            return False
        if self.client is not None and identity.client != self.client:
            return False
        return identity.since < self.at


def check_id(name: str, value: object) -> str:
    """``value`` if it is a non-empty string of at most :data:`MAX_ID`
    characters; ValueError naming ``name`` otherwise."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise ValueError(f"{name} must be a non-empty string of at most {MAX_ID} characters")
    return value


def check_time(name: str, value: object) -> float:
    """``value`` as a Unix time in seconds; ValueError naming ``name`` for
    anything else, with a hint when it looks like milliseconds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a Unix time in seconds (a number)")
    if value > MAX_SECONDS:
        raise ValueError(
            f"{name} {value} looks like milliseconds: give seconds since 1970 "
            f"(for example {value / 1000:.0f})"
        )
    if value < 0:
        raise ValueError(f"{name} must be a Unix time in seconds, not negative")
    return float(value)


def _one_target(
    user: object, client: object, names: tuple[str, str]
) -> tuple[str | None, str | None]:
    if (user is None) == (client is None):
        raise ValueError(f"give exactly one of {names[0]} and {names[1]}")
    if user is not None:
        return check_id(names[0], user), None
    if names[1] == "client" and isinstance(client, str):
        client = bare_client_id(client)
    return None, check_id(names[1], client)


def bare_client_id(client: str) -> str:
    """A client id as the wire carries it (``CLIENT~SINCE.SIG``, or
    ``CLIENT.SIG`` from earlier versions) without what the server added;
    a bare id as it is (server-made ids have neither ``~`` nor ``.``).

    >>> bare_client_id("5c1e0a9f-2s~mj3k2l9c.Qm9v"), bare_client_id("5c1e0a9f-2s")
    ('5c1e0a9f-2s', '5c1e0a9f-2s')
    """
    return client.partition("~")[0].partition(".")[0]


def _new_id() -> str:
    return secrets.token_hex(8)


def disconnect_command(
    user: object = None,
    client: object = None,
    reconnect: object = False,
    *,
    now: float | None = None,
) -> Command:
    """A disconnect of every connection of ``user`` (or the one ``client``)."""
    user_id, client_id = _one_target(user, client, ("user", "client"))
    if not isinstance(reconnect, bool):
        raise ValueError("reconnect must be true or false")
    at = time.time() if now is None else now
    return Command(
        _new_id(), DISCONNECT, at, at + POLL_WINDOW, user_id, client_id, reconnect=reconnect
    )


def unsubscribe_command(
    channel: str, user: object = None, client: object = None, *, now: float | None = None
) -> Command:
    """An unsubscribe of ``user``'s (or ``client``'s) connections from
    ``channel`` (a name already checked)."""
    user_id, client_id = _one_target(user, client, ("user", "client"))
    at = time.time() if now is None else now
    return Command(_new_id(), UNSUBSCRIBE, at, at + POLL_WINDOW, user_id, client_id, channel)


def revoke_command(
    user: object = None,
    before: object = None,
    jti: object = None,
    expires: object = None,
    *,
    now: float | None = None,
) -> Command:
    """A revocation of ``user``'s tokens issued before ``before``, or of the
    one token ``jti`` until ``expires`` (required then)."""
    now = time.time() if now is None else now
    user_id, jti_id = _one_target(user, jti, ("user", "jti"))
    if user_id is not None:
        if before is None:
            raise ValueError("a user revocation needs before (a Unix time in seconds)")
        at = check_time("before", before)
        until = at + REVOKE_TTL if expires is None else check_time("expires", expires)
    else:
        if before is not None:
            raise ValueError("before goes with user, not with jti")
        if expires is None:
            raise ValueError("a token revocation needs expires (the token's exp)")
        at, until = now, check_time("expires", expires)
    if until <= now:
        hint = "" if expires is not None else f" (the default, before + {REVOKE_TTL:.0f} s)"
        raise ValueError(f"expires {until:.0f} is not in the future (now is {now:.0f}){hint}")
    return Command(_new_id(), REVOKE, at, until, user_id, None, None, jti_id)


def _key(command: Command) -> str:
    if command.jti is not None:
        return "j:" + command.jti
    if command.user is not None:
        return "u:" + command.user
    return "c:" + str(command.client)


def _keys(identity: Identity) -> list[str]:
    keys = ["c:" + identity.client]
    if identity.user is not None:
        keys.append("u:" + identity.user.id)
    if identity.token_id is not None:
        keys.append("j:" + identity.token_id)
    return keys


class ControlTable:
    """The commands in force in this process, indexed by the user, client
    or token they name, so a request looks up only its own.

    Bounded by :data:`MAX_COMMANDS` (the soonest to expire go first);
    expired commands are dropped as they are met, and by :meth:`prune`.
    """

    __slots__ = ("_by_id", "_by_key", "_limit")

    def __init__(self, limit: int = MAX_COMMANDS) -> None:
        self._by_id: dict[str, Command] = {}
        self._by_key: dict[str, list[Command]] = {}
        self._limit = limit

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, command: Command, now: float | None = None) -> bool:
        """Keep ``command`` until it expires; False if it was known or has expired."""
        now = time.time() if now is None else now
        if command.id in self._by_id or command.expires <= now:
            return False
        self._by_id[command.id] = command
        self._by_key.setdefault(_key(command), []).append(command)
        if len(self._by_id) > self._limit:
            self.prune(now)
            if len(self._by_id) > self._limit:
                ordered = sorted(self._by_id.values(), key=lambda c: c.expires)
                for extra in ordered[: len(self._by_id) - self._limit]:
                    self._forget(extra)
        return True

    def _forget(self, command: Command) -> None:
        del self._by_id[command.id]
        key = _key(command)
        rest = [c for c in self._by_key.get(key, ()) if c.id != command.id]
        if rest:
            self._by_key[key] = rest
        else:
            self._by_key.pop(key, None)

    def merge(self, commands: Iterable[Command], now: float | None = None) -> list[Command]:
        """Add ``commands`` (what the broker holds); returns those that were
        not known before."""
        now = time.time() if now is None else now
        return [command for command in commands if self.add(command, now)]

    def prune(self, now: float | None = None) -> None:
        """Forget every command that has expired."""
        now = time.time() if now is None else now
        for command in [c for c in self._by_id.values() if c.expires <= now]:
            self._forget(command)

    def commands(self) -> list[Command]:
        return list(self._by_id.values())

    def first(self, kind: str, identity: Identity, channel: str | None = None) -> Command | None:
        """The first command in force of ``kind`` that matches ``identity``
        (for ``unsubscribe``, of ``channel``)."""
        if not self._by_key:
            return None  # the common case: nothing in force
        now = time.time()
        for key in _keys(identity):
            for command in self._by_key.get(key, ()):
                if command.kind != kind or command.expires <= now:
                    continue
                if channel is not None and command.channel != channel:
                    continue
                if command.matches(identity):
                    return command
        return None
