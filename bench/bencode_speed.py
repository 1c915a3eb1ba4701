"""Speed of swarmcast.bencoding on our real payloads, against bencoder.pyx when it is installed.

    PYTHONPATH=src python bench/bencode_speed.py [--repeat N]

Payloads: a transport file as the source writes it, the internal tracker's answer with 50 compact peers, and
the same answer in the dictionary form (compact=0). Prints microseconds per decode and per encode, and per
decode for bencoder.pyx, fastbencode and bencode-py when installed (e.g. ``pip install --target /tmp/bx ...`` and
``PYTHONPATH=src:/tmp/bx``).
"""

from __future__ import annotations

import argparse
import importlib
import random
import timeit
from collections.abc import Callable

from swarmcast import bencoding
from swarmcast.discovery.tracker_server import InternalTracker
from swarmcast.transport import Descriptor


def payloads() -> dict[str, bytes]:
    descriptor = Descriptor(
        name="news", title="Evening news", piece_size=65536, bitrate=250_000, public_key=bytes(range(32)),
        categories=("informational", "regional"), trackers=("http://127.0.0.1:6878/announce", "udp://t.example:80"),
    )
    tracker = InternalTracker(rng=random.Random(1))
    info_hash = descriptor.content_id
    for i in range(60):
        params = {"info_hash": info_hash, "peer_id": b"%020d" % i, "port": b"%d" % (7000 + i), "left": b"1"}
        tracker.handle_announce(params, f"10.0.{i // 250}.{i % 250 + 1}", 0.0)
    ask = {"info_hash": info_hash, "peer_id": b"x" * 20, "port": b"9000"}
    return {
        "transport file": descriptor.encode(),
        "tracker, 50 compact peers": tracker.handle_announce(ask, "10.9.9.9", 1.0),
        "tracker, 50 dict peers": tracker.handle_announce({**ask, "compact": b"0"}, "10.9.9.9", 1.0),
    }


def per_call_us(function: Callable[[], object], repeat: int) -> float:
    best = min(timeit.repeat(function, number=repeat, repeat=5))
    return best / repeat * 1e6


def _others() -> dict[str, Callable[[bytes], object]]:
    """Decoders of the libraries we compared with, those that are installed (none is a dependency)."""
    found: dict[str, Callable[[bytes], object]] = {}
    for label, module, function in (("bencoder.pyx", "bencoder", "bdecode"), ("fastbencode", "fastbencode", "bdecode"),
                                    ("bencode-py", "bencodepy", "decode")):  # fmt: skip
        try:
            found[label] = getattr(importlib.import_module(module), function)
        except ImportError:
            continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    others = _others()
    print(f"{'payload':27} {'bytes':>6} {'decode us':>10} {'encode us':>10}" + "".join(f" {n:>13}" for n in others))
    for name, data in payloads().items():
        value = bencoding.decode(data, max_size=1 << 20)
        assert bencoding.encode(value) == data
        ours_dec = per_call_us(lambda d=data: bencoding.decode(d, max_size=1 << 20), args.repeat)  # type: ignore[misc]
        ours_enc = per_call_us(lambda v=value: bencoding.encode(v), args.repeat)  # type: ignore[misc]
        theirs = "".join(f" {per_call_us(lambda f=f, d=data: f(d), args.repeat):13.1f}" for f in others.values())  # type: ignore[misc]
        print(f"{name:27} {len(data):6} {ours_dec:10.1f} {ours_enc:10.1f}{theirs}")


if __name__ == "__main__":
    main()
