"""``acestreamengine`` / ``start-engine``: the Ace Stream engine's command line, onto ``swarmcast node ...``.

How this works: the mode flag picks the role and is replaced by the subcommand that runs it, every other word is
passed on unchanged, and the role's own parser (commands/node.py, which takes every Ace Stream option itself) does
the rest. So ``acestreamengine --stream-source-node --port 7764 ...`` is exactly ``swarmcast node source --port 7764
...``: one parser, one set of checks and error messages, no second copy of the options to drift apart.

    --stream-source-node   -> node source
    --stream-support-node  -> node support
    --stream-startup-node  -> node startup
    --client-console       -> engine          (the viewer engine; Ace Stream's console client)
    --create-hls-transport -> hls create-transport (an HLS broadcast's transport files)
    --version              -> prints ``version: <version> revision: <revision>``, as the Ace Stream engine does

Run under either name, the process calls itself ``acestreamengine`` (what streaming-utils matches with psutil)
and writes ``acestreamengine-<port>.pid`` (node/lifecycle.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from swarmcast import VERSION_CODE, __version__
from swarmcast.cli import EXIT_USAGE, build_parser, find_subparser
from swarmcast.cli import main as swarmcast_main
from swarmcast.node.lifecycle import ENGINE_PROCESS_NAME, set_process_name

MODES = {
    "--stream-source-node": ("node", "source"),
    "--stream-support-node": ("node", "support"),
    "--stream-startup-node": ("node", "startup"),
    "--client-console": ("engine",),
    "--create-hls-transport": ("hls", "create-transport"),
}
# ``--version``'s revision: the package's numeric version code (also /webui/api/service?method=get_version's
# ``code``), which grows with every release as Ace Stream's revision does.
REVISION = VERSION_CODE

USAGE = """\
usage: {prog} MODE [OPTIONS]
       {prog} --version

MODE is one of
  --stream-source-node    a source node (swarmcast node source)
  --stream-support-node   a support node (swarmcast node support)
  --stream-startup-node   a start node (swarmcast node startup)
  --client-console        the viewer engine (swarmcast engine)
  --create-hls-transport  write an HLS broadcast's transport files (swarmcast hls create-transport)

`{prog} MODE --help` lists the options of a mode; docs/operators.md, "Command line (acestreamengine)", maps every
Ace Stream option.
"""


class TranslationError(ValueError):
    """The words cannot be an Ace Stream command line (no mode, two modes, a mode this build lacks)."""


def version_line() -> str:
    return f"version: {__version__} revision: {REVISION}"


def find_mode(words: Sequence[str]) -> tuple[int, str]:
    """Where the one mode option is in ``words`` and which it is; TranslationError for none or two."""
    cut = list(words).index("--") if "--" in words else len(words)
    found = [(i, w) for i, w in enumerate(words[:cut]) if w in MODES]
    if not found:
        raise TranslationError(f"give a mode: {', '.join(MODES)}")
    if len(found) > 1:
        raise TranslationError(f"one mode at a time, not {' and '.join(w for _, w in found)}")
    return found[0]


def translate(argv: Sequence[str], parser: argparse.ArgumentParser | None = None) -> list[str]:
    """The ``swarmcast`` command line for Ace Stream's ``argv`` (without the program name).

    ``parser`` (default: a new ``swarmcast`` parser) says which subcommands this build has, so that a mode whose
    role is not built gets a clear error instead of argparse's "invalid choice".
    """
    words = list(argv)
    index, mode = find_mode(words)
    command = MODES[mode]
    if find_subparser(parser or build_parser(commands=command[:1]), command) is None:
        raise TranslationError(f"{mode}: this build has no `swarmcast {' '.join(command)}`")
    return [*command, *words[:index], *words[index + 1 :]]


def engine_parser(prog: str, commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``swarmcast`` parser (of ``commands``, default all), with each mode's parser named
    ``PROG --stream-...-node`` in its usage and errors."""
    parser = build_parser(prog) if commands is None else build_parser(prog, commands)
    for mode, command in MODES.items():
        sub = find_subparser(parser, command)
        if sub is not None:
            sub.prog = f"{prog} {mode}"
            sub.set_defaults(command_prog=sub.prog)
    return parser


def program_name() -> str:
    return Path(sys.argv[0]).name or ENGINE_PROCESS_NAME


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    prog = program_name()
    if "--version" in words[: words.index("--") if "--" in words else len(words)]:
        print(version_line())
        return 0
    if not words or words in (["--help"], ["-h"]):
        print(USAGE.format(prog=prog), end="")
        return 0 if words else EXIT_USAGE
    try:
        # Only the mode's own command is imported: the viewer engine loads no broadcaster code.
        parser = engine_parser(prog, MODES[find_mode(words)[1]][:1])
        translated = translate(words, parser)
    except TranslationError as error:
        print(f"{prog}: error: {error} (see {prog} --help)", file=sys.stderr)
        return EXIT_USAGE
    set_process_name(ENGINE_PROCESS_NAME)
    return swarmcast_main(translated, prog=prog, parser=parser)


if __name__ == "__main__":
    sys.exit(main())
