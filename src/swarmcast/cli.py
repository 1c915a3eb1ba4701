"""The ``swarmcast`` command: one entry point, one module per subcommand under swarmcast.commands.

Errors in the command line are one line naming the flag and the bad value, exit code 2, no traceback: argparse's
own (an unknown option, a bad value) and the checks a command runs before it starts (a port in use, a directory it
cannot write: commands/preflight.py). Abbreviated options are not taken: an Ace Stream option we do not know must
not pass for a prefix of one we do. ``--debug-*`` switches (Ace Stream's per-topic debugging) are the one kind of
unknown option accepted, by every command that has ``--debug``.

Only the subcommand named on the command line is imported (``commands_for``): a viewer engine never loads the
broadcaster's PyAV, RTMP and fleet code just to build parsers it will not use. ``--help``, a missing or an unknown
command builds them all (the list of commands and argparse's "invalid choice" need every one).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, Protocol, cast

from swarmcast import __version__
from swarmcast.commands.preflight import UsageError

# Each module defines ``register(subparsers)`` which adds its parser and sets ``func`` (args -> exit code).
COMMAND_MODULES = ("testsrc", "node", "engine", "demo", "metatracker", "broadcaster", "hls", "fleet", "registry", "ctl")
EXIT_USAGE = 2
# ``--debug-pieces``, ``--debug-connecter``, ...; ``--debug-x=0`` or ``--debug-x 0`` turns one off again.
DEBUG_SWITCH = re.compile(r"--debug-[a-z0-9][a-z0-9-]*(=.*)?", re.IGNORECASE)
MAX_DEBUG_SWITCHES = 256


class _CommandModule(Protocol):
    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and no abbreviations; every subparser is one too (argparse makes subparsers
    of the parent's class)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def commands_for(words: Sequence[str]) -> tuple[str, ...]:
    """The subcommands whose parsers ``words`` needs: the one it names first, or all of them."""
    for word in words:
        if word == "--":
            break
        if not word.startswith("-"):
            return (word,) if word in COMMAND_MODULES else COMMAND_MODULES
    return COMMAND_MODULES


def build_parser(prog: str = "swarmcast", commands: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The parser with the subcommands ``commands`` (default: every one; each is imported to register it)."""
    parser = Parser(prog=prog, description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"swarmcast {__version__}")
    subparsers = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
                      parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))  # fmt: skip
    for name in commands:
        module = cast(_CommandModule, importlib.import_module(f"swarmcast.commands.{name}"))
        module.register(subparsers)
    return parser


def known_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and its subparsers, at any depth."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= known_options(sub)
    return found


def split_debug_switches(argv: Sequence[str], known: set[str]) -> tuple[list[str], list[str]]:
    """Take Ace Stream's ``--debug-*`` switches out of ``argv``: (the rest, the switches that are on).

    A switch may carry ``=0``/``=1`` or be followed by a bare ``0``/``1`` (no option of ours takes a positional
    argument, so that word can only be the switch's). Options of our own that start with ``--debug-`` are left.
    """
    rest: list[str] = []
    switches: list[str] = []
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            rest.extend(words[i:])
            break
        match = DEBUG_SWITCH.fullmatch(word)
        if match is None or word.split("=", 1)[0] in known:
            rest.append(word)
            i += 1
            continue
        name, _, value = word.partition("=")
        if not match.group(1) and i + 1 < len(words) and words[i + 1] in ("0", "1"):
            value = words[i + 1]
            i += 1
        if value not in ("", "0", "1"):
            rest.append(word)  # argparse names it as unrecognized
        elif value != "0":
            switches.append(name)
        i += 1
    if len(switches) > MAX_DEBUG_SWITCHES:
        switches = switches[:MAX_DEBUG_SWITCHES]
    return rest, switches


def find_subparser(parser: argparse.ArgumentParser, path: Sequence[str]) -> argparse.ArgumentParser | None:
    """The parser of subcommand ``path`` (("node", "source")), or None if there is no such subcommand."""
    for name in path:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or name not in subs[0].choices:
            return None
        parser = subs[0].choices[name]
    return parser


def report_unknown_options(parser: argparse.ArgumentParser, words: Sequence[str]) -> None:
    """Exit naming the first unknown ``--option`` of the chosen subcommand, before argparse would complain about a
    missing required option instead (an Ace Stream option we lack is the error the operator must see)."""
    path: list[str] = []
    sub: argparse.ArgumentParser | None = parser
    for word in words:
        if word.startswith("-"):
            break
        deeper = find_subparser(parser, [*path, word])
        if deeper is None:
            break
        path.append(word)
        sub = deeper
    if sub is None or not path:
        return
    # The options of its own subcommands too (``ctl --url U limits --upload-slots 3``: the walk above stops at
    # ``--url``); argparse still refuses an option given to the wrong one.
    known = known_options(sub)
    rest = list(words[len(path) :])
    if "--" in rest:
        rest = rest[: rest.index("--")]
    unknown = [w for w in rest if w.startswith("--") and w.split("=", 1)[0] not in known]
    if unknown:
        sub.error(f"unrecognized arguments: {' '.join(unknown)}")


def main(argv: Sequence[str] | None = None, *, prog: str = "swarmcast",
         parser: argparse.ArgumentParser | None = None) -> int:  # fmt: skip
    words = list(sys.argv[1:] if argv is None else argv)
    parser = parser or build_parser(prog, commands_for(words))
    words, switches = split_debug_switches(words, known_options(parser))
    report_unknown_options(parser, words)
    args = parser.parse_args(words)
    if switches:
        if not hasattr(args, "debug"):
            parser.error(f"unrecognized arguments: {' '.join(switches)}")
        args.debug_switches = tuple(switches)
    command_prog = str(getattr(args, "command_prog", prog))
    preflight = cast(Callable[[argparse.Namespace], None] | None, getattr(args, "preflight", None))
    prepare = cast(Callable[[argparse.Namespace], None] | None, getattr(args, "prepare", None))
    try:
        if preflight is not None:
            preflight(args)
        if prepare is not None:
            prepare(args)
        code = args.func(args)
    except UsageError as error:
        print(f"{command_prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
