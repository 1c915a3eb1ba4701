"""The HLS options of ``node source`` and ``node support``, and the HLS support node's typed config.

``acestreamengine --url Y.acelive --public-transport-file X.acelive --stream-support-node --hide-hls-segments
--hls-broadcast-last-source-piece --hls-bad-manifest-max-errors 5 --hls-bad-manifest-retry-interval 2
[--hls-force-monotonic-sequence 1]`` (streaming-utils' line) is ``swarmcast node support`` with these options; a
``--url`` naming a private HLS file (swarmcast/hls_transport.py) makes the node the broadcast's signer
(node/hls_signer.py).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from swarmcast.commands.options import common_from_args, positive_float, positive_int, zero_or_one
from swarmcast.hls_transport import MAX_PRIVATE_FILE, PrivateHlsFile, is_private_hls_file
from swarmcast.ingest.hls import HlsSettings
from swarmcast.node.config import SourceConfig
from swarmcast.transport import TransportError

MAX_BAD_MANIFESTS = 1000


def bad_manifest_count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_BAD_MANIFESTS:
        raise argparse.ArgumentTypeError(f"{value} is not in 1..{MAX_BAD_MANIFESTS}")
    return value


def retry_interval(text: str) -> float:
    value = positive_float(text)
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError(f"{value:g} is not in 0.1..60 (seconds)")
    return value


def add_hls_options(parser: argparse.ArgumentParser, *, support: bool) -> None:
    group = parser.add_argument_group("HLS input (docs/hls.md, HLS ingest)")
    group.add_argument("--hls-bad-manifest-max-errors", type=bad_manifest_count, default=5, metavar="N",
                       help="consecutive bad playlists (media sequence backwards, segments vanished, unparsable) "
                            "before the stream is reset to the live end with a discontinuity (default 5)")
    group.add_argument("--hls-bad-manifest-retry-interval", type=retry_interval, default=2.0, metavar="SECONDS",
                       help="seconds between reads of a bad playlist (default 2)")
    group.add_argument("--hls-force-monotonic-sequence", type=zero_or_one, default=False, metavar="0|1",
                       help="1: an origin whose media sequence restarted is followed at once as a new run and our "
                            "segment numbers keep rising across it (default 0)")  # fmt: skip
    group.add_argument("--hls-variant", metavar="NAME",
                       help="of a master playlist, the variant with this NAME (or file stem) (default: the highest "
                            "BANDWIDTH)")  # fmt: skip
    if not support:
        return
    group.add_argument("--public-transport-file", type=Path, metavar="FILE",
                       help="with a private HLS file as --url: the public transport file; must be the one the "
                            "private file was made with (default: the one inside the private file)")
    group.add_argument("--hide-hls-segments", action="store_true",
                       help="with a private HLS file: segment indexes name no URI, engines cannot fetch from the "
                            "origin (default: they name it when the public file has the manifest)")
    # streaming-utils gives the HLS support node its --metadata-dir (start_streamers.py): the signer keeps its
    # .sauth and .restart there, where update-metadata looks for them.
    group.add_argument("--metadata-dir", type=Path, metavar="DIR",
                       help="with a private HLS file: where the signer keeps <name>.sauth and <name>.restart "
                            "(default: --state-dir, or the private file's directory)")
    group.add_argument("--hls-broadcast-last-source-piece", action="store_true",
                       help="accepted for Ace Stream command lines: every signed piece is announced at once "
                            "anyway (default: off, the same)")


def hls_settings(args: argparse.Namespace) -> HlsSettings:
    return HlsSettings(
        bad_manifest_max_errors=args.hls_bad_manifest_max_errors,
        bad_manifest_retry_interval=args.hls_bad_manifest_retry_interval,
        force_monotonic=args.hls_force_monotonic_sequence,
        variant=args.hls_variant,
    )


def private_hls_file(url: str) -> PrivateHlsFile | None:
    """The private HLS file ``--url`` names (None when it names something else); TransportError if it is bad."""
    if "://" in url:
        return None
    path = Path(url)
    try:
        if not path.is_file():
            return None
        with open(path, "rb") as file:
            head = file.read(MAX_PRIVATE_FILE + 1)
    except OSError:
        return None
    if not is_private_hls_file(head):
        return None
    return PrivateHlsFile.decode(head)


def signer_config(args: argparse.Namespace, private: PrivateHlsFile) -> SourceConfig:
    """The HLS support node's config: a source node's, with the descriptor's values; TransportError for a public
    transport file that is not the private file's."""
    descriptor = private.descriptor
    if args.public_transport_file is not None:
        try:
            public = args.public_transport_file.read_bytes()[: MAX_PRIVATE_FILE + 1]
        except OSError as error:
            raise TransportError(f"--public-transport-file {args.public_transport_file}: {error.strerror}") from None
        if public != private.transport:
            raise TransportError(f"--public-transport-file {args.public_transport_file} is not the transport file "
                                 "the private file was made with")  # fmt: skip
    common = common_from_args(args)
    trackers = tuple(dict.fromkeys(descriptor.trackers + common.trackers))
    directory = args.state_dir or Path(args.url).parent
    if (directory / f"{descriptor.name}.acelive").resolve() == Path(args.url).resolve():
        raise TransportError(f"the node would write its transport file over the private file {args.url}: give "
                             "--state-dir, or rename the private file")  # fmt: skip
    return SourceConfig(
        common=replace(common, trackers=trackers), source_url=private.hls_manifest, name=descriptor.name,
        title=descriptor.title, bitrate=descriptor.bitrate, quality=descriptor.quality,
        categories=descriptor.categories, publish_dir=directory, metadata_dir=args.metadata_dir or directory,
        provider_key=descriptor.provider_key, hls=hls_settings(args),
    )  # fmt: skip
