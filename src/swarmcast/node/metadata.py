"""A broadcast's metadata that must survive restarts and moves: key, piece numbering, detected bitrate.

- ``<name>.sauth``: the Ed25519 private key (mode 0600).
- ``<name>.restart``: the next piece number the source may use. The source reserves numbers in blocks and writes
  the end of the current block *before* using any of it, so even after kill -9 a restart never reuses a number
  that peers may already hold with other data; the numbering just jumps ahead by less than one block.
- ``<name>.acelive`` (a copy of the published transport file): keeps a detected bitrate, so that ``--bitrate 0``
  after a restart gives the same descriptor and content id instead of a freshly measured, slightly different one.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmcast.transport import Descriptor, TransportError, load_or_create_key

RESERVE_BLOCK = 1000


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


class BroadcastMetadata:
    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = name
        self.key_path = directory / f"{name}.sauth"
        self.restart_path = directory / f"{name}.restart"
        self.descriptor_path = directory / f"{name}.acelive"
        self._reserved_until = 0

    def key(self) -> Ed25519PrivateKey:
        return load_or_create_key(self.key_path)

    def saved_descriptor(self) -> Descriptor | None:
        if not self.descriptor_path.exists():
            return None
        try:
            return Descriptor.decode(self.descriptor_path.read_bytes())
        except TransportError:
            return None

    def save_descriptor(self, descriptor: Descriptor) -> None:
        _atomic_write(self.descriptor_path, descriptor.encode())

    def first_index(self) -> int:
        """Where numbering continues; reserves the first block at once."""
        start = 0
        if self.restart_path.exists():
            text = self.restart_path.read_text().strip()
            if not text.isdigit():
                raise ValueError(f"{self.restart_path} holds {text!r}, not a piece number")
            start = int(text)
        self._reserve(start)
        return start

    def note_index(self, index: int) -> None:
        """Call before publishing piece ``index``: extends the reservation when it runs out."""
        if index >= self._reserved_until:
            self._reserve(index)

    def _reserve(self, index: int) -> None:
        self._reserved_until = index + RESERVE_BLOCK
        _atomic_write(self.restart_path, f"{self._reserved_until}\n".encode())
