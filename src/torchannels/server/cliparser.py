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
        return difflib.get_close_matches(name, options, n=2, cutoff=0.6)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        self._check_before_command(argv)
        parsed: argparse.Namespace
        parsed, extras = self.parse_known_args(argv, namespace)
        if extras:
            self._command_parser(parsed).unrecognized(extras)
        return parsed

    def add_subparsers(self, **kwargs: Any) -> Any:
        self._commands = commands = super().add_subparsers(**kwargs)
        return commands

    def _check_before_command(self, argv: list[str]) -> None:
        """A mistyped option before the subcommand (``--verison``) would
        otherwise only be reported as a missing COMMAND."""
        commands = getattr(self, "_commands", None)
        if commands is None:
            return
        options = [o for o in self._option_string_actions if o.startswith("--")]
        for arg in argv:
            if arg == "--" or arg in commands.choices:
                return
            name = arg.split("=", 1)[0]
            if arg.startswith("--") and not any(o.startswith(name) for o in options):
                self.unrecognized([arg])

    def _command_parser(self, parsed: argparse.Namespace) -> SuggestingParser:
        """The subcommand's parser that took the arguments, else self."""
        commands = getattr(self, "_commands", None)
        if commands is not None:
            chosen = commands.choices.get(getattr(parsed, commands.dest or "", None) or "")
            if isinstance(chosen, SuggestingParser):
                return chosen
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
