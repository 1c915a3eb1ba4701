"""``swarmcast hls create-transport``: the transport files of an HLS broadcast (Ace Stream's --create-hls-transport).

``acestreamengine --create-hls-transport --url M3U8 --title T --output-public X.acelive [--output-private
Y.acelive] [--hide-hls-manifest] [--base-url URL] [--provider-key K] [--sid S] [--tracker ...] [--category ...]``
is translated to this command (commands/acestream.py). It makes the broadcast key and writes both files
(swarmcast/hls_transport.py); the HLS support node started with the private one signs and seeds the broadcast
(docs/hls.md, "HLS ingest").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swarmcast.commands.node import _default_name, _name, category
from swarmcast.commands.options import add_log_options, non_negative_int, start_logging, tracker_url
from swarmcast.hls_transport import create_hls_transport, write_file
from swarmcast.swarm.cutter import choose_piece_size
from swarmcast.transport import QUALITIES, Descriptor, check_hls_url

DEFAULT_HLS_BITRATE = 500_000  # bytes/s (4 Mbit/s) when --bitrate is not given: sets the piece size only


def hls_url(text: str) -> str:
    try:
        return check_hls_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hls = subparsers.add_parser("hls", help="HLS broadcasts (Ace Stream's --create-hls-transport)")
    commands = hls.add_subparsers(dest="hls_command", required=True)
    create = commands.add_parser(
        "create-transport", help="write the public and private transport files of an HLS broadcast",
        description="Make an HLS broadcast's key and transport files. Ace Stream's spelling: acestreamengine "
        "--create-hls-transport ...",
    )  # fmt: skip
    create.add_argument("--url", type=hls_url, required=True, metavar="M3U8",
                        help="the origin's HLS playlist (master or media), http(s) (required)")
    create.add_argument("--title", required=True, help="the broadcast's title (required)")
    create.add_argument("--output-public", type=Path, required=True, metavar="FILE",
                        help="the public transport file, for engines (required)")
    create.add_argument("--output-private", type=Path, metavar="FILE",
                        help="the private file, for the HLS support node: holds the key (default: the public "
                             "file's name with .private before the extension)")  # fmt: skip
    create.add_argument("--hide-hls-manifest", action="store_true",
                        help="leave the manifest URL out of the public file: a private broadcast, engines get "
                             "everything through the swarm (default: a public 'hybrid' broadcast)")  # fmt: skip
    create.add_argument("--base-url", type=hls_url, metavar="URL",
                        help="where engines fetch segments: segment URIs are taken relative to it "
                             "(default: relative to --url)")  # fmt: skip
    create.add_argument("--provider-key", default="", metavar="KEY", help="the provider key (default: none)")
    create.add_argument("--sid", default="", metavar="ID", help="the provider's stream id, printed (default: none)")
    create.add_argument("--tracker", type=tracker_url, action="append", default=[], metavar="URL",
                        help="a tracker (repeatable; default: none)")
    create.add_argument("--category", type=category, action="append", default=[], metavar="CATEGORY",
                        help="a category (repeatable; default: none)")
    create.add_argument("--name", type=_name, help="the broadcast's name (default: derived from --title)")
    create.add_argument("--quality", choices=QUALITIES, default="SD", help="SD or HD (default %(default)s)")
    create.add_argument("--bitrate", type=non_negative_int, default=DEFAULT_HLS_BITRATE, metavar="BYTES_PER_S",
                        help="the stream's bitrate in bytes/s: sets the piece size (default %(default)s)")
    # streaming-utils runs this step with --log-debug 1 (start_streamers.py, create_transport_files).
    add_log_options(create)
    create.set_defaults(func=run_create, prepare=start_logging, command_prog=create.prog)


def run_create(args: argparse.Namespace) -> int:
    private_path: Path = args.output_private or args.output_public.with_name(
        f"{args.output_public.stem}.private{args.output_public.suffix or '.acelive'}")  # fmt: skip
    if private_path.resolve() == args.output_public.resolve():
        print(f"{args.command_prog}: error: --output-private is the same file as --output-public", file=sys.stderr)
        return 2
    template = Descriptor(
        name=args.name or _default_name(args.title), title=args.title, piece_size=choose_piece_size(args.bitrate),
        bitrate=args.bitrate, public_key=b"\0" * 32, quality=args.quality, categories=tuple(args.category),
        trackers=tuple(dict.fromkeys(args.tracker)), provider_key=args.provider_key,
        # A hidden manifest hides the segments' base URL too: either names the origin a private broadcast hides.
        hls_manifest="" if args.hide_hls_manifest else args.url,
        hls_base_url="" if args.hide_hls_manifest else args.base_url or "",
    )  # fmt: skip
    descriptor, private = create_hls_transport(template, args.url)
    try:
        write_file(args.output_public, descriptor.encode())
        write_file(private_path, private.encode(), secret=True)
    except OSError as error:
        print(f"{args.command_prog}: error: cannot write the transport files: {error}", file=sys.stderr)
        return 2
    kind = "private (manifest hidden)" if args.hide_hls_manifest else "public (hybrid)"
    print(f"content id {descriptor.infohash}")
    print(f"public transport file {args.output_public} ({kind})")
    print(f"private file {private_path} (keep it secret: it signs the broadcast)")
    if args.sid:
        print(f"sid {args.sid}")
    return 0
