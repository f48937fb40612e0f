"""An ``argparse`` parser that says "did you mean" for a mistyped option.

Python 3.11's argparse only reports ``unrecognized arguments: --prot 9000``,
with the top-level usage even when the option belonged to a subcommand.
:class:`SuggestingParser` names the subcommand, shows its usage, and
suggests the closest options it has.

>>> parser = SuggestingParser(prog="demo")
>>> _ = parser.add_argument("--port")
>>> parser.suggestions("--prot")
['--port']
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn


class SuggestingParser(argparse.ArgumentParser):
    """Subparsers made by :meth:`add_subparsers` are of this class too."""

    def suggestions(self, given: str) -> list[str]:
        """Options of this parser close to ``given`` (``--name=value`` or ``--name``)."""
        name = given.split("=", 1)[0]
        options = [o for o in self._option_string_actions if o.startswith("--")]
        return difflib.get_close_matches(name, options, n=1, cutoff=0.6)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        self._check_options(argv)
        parsed: argparse.Namespace
        parsed, extras = self.parse_known_args(argv, namespace)
        if extras:
            self._command_parser(parsed).unrecognized(extras)
        return parsed

    def add_subparsers(self, **kwargs: Any) -> Any:
        self._commands = commands = super().add_subparsers(**kwargs)
        return commands

    def _check_options(self, argv: list[str]) -> None:
        """Report a mistyped option before argparse does: its own report may
        be of something else (a missing COMMAND or required option).
        Subcommands of subcommands (``outbox init``) are followed too."""
        parser: SuggestingParser = self
        for arg in argv:
            if arg == "--":
                return
            commands = getattr(parser, "_commands", None)
            if commands is not None and arg in commands.choices:
                parser = commands.choices[arg]
            elif arg.startswith("--") and not parser._known(arg):
                parser.unrecognized([arg])

    def _known(self, arg: str) -> bool:
        """Whether ``arg`` names an option of this parser, or abbreviates one."""
        name = arg.split("=", 1)[0]
        return any(o.startswith(name) for o in self._option_string_actions)

    def _command_parser(self, parsed: argparse.Namespace) -> SuggestingParser:
        """The (innermost) subcommand's parser that took the arguments, else self."""
        commands = getattr(self, "_commands", None)
        if commands is not None:
            chosen = commands.choices.get(getattr(parsed, commands.dest or "", None) or "")
            if isinstance(chosen, SuggestingParser):
                return chosen._command_parser(parsed)
        return self

    def unrecognized(self, extras: list[str]) -> NoReturn:
        hints = []
        for arg in extras:
            if arg.startswith("--"):
                close = self.suggestions(arg)
                if close:
                    hints.append(f"{arg.split('=', 1)[0]}: did you mean {' or '.join(close)}?")
        message = f"unrecognized arguments: {' '.join(extras)}"
        if hints:
            message += "\n" + "\n".join(hints)
        self.error(message)
