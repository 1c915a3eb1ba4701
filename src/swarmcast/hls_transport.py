"""Transport files of an HLS broadcast (``--create-hls-transport``): the public one and the signer's private one.

How this works. The public file is an ordinary transport file (transport.py) whose descriptor also carries
``hls_manifest`` (unless the manifest is hidden) and ``hls_base_url`` (``--base-url``): engines given it join the
swarm as for any broadcast, and may fetch segments from the origin (node/hls_fallback.py). The private file is what
the HLS support node (node/hls_signer.py) needs to be the broadcast's signer: a bencoded dictionary of

- ``swarmcast_hls_private`` = 1 (format version),
- ``transport``: the public transport file's bytes, exactly (so both files name one content id),
- ``hls_manifest``: the origin's playlist URL (also when the public file hides it),
- ``private_key``: the broadcast's Ed25519 private key, 32 raw bytes (RFC 8032 seed).

Keep the private file as secret as a ``.sauth``: whoever holds it can sign the broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmcast import bencoding
from swarmcast.files import write_file_atomically
from swarmcast.transport import Descriptor, TransportError, check_hls_url, public_key_bytes
from swarmcast.wire.messages import MAX_METADATA_SIZE

PRIVATE_FORMAT = 1
MAX_PRIVATE_FILE = 2 * MAX_METADATA_SIZE
_PRIVATE_KEYS = {b"swarmcast_hls_private", b"transport", b"hls_manifest", b"private_key"}


@dataclass(frozen=True)
class PrivateHlsFile:
    transport: bytes
    hls_manifest: str
    private_key: bytes  # 32 raw bytes

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor.decode(self.transport)

    def key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.private_key)

    def encode(self) -> bytes:
        return bencoding.encode({
            b"swarmcast_hls_private": PRIVATE_FORMAT,
            b"transport": self.transport,
            b"hls_manifest": self.hls_manifest.encode(),
            b"private_key": self.private_key,
        })  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> PrivateHlsFile:
        if len(data) > MAX_PRIVATE_FILE:
            raise TransportError(f"private HLS file is {len(data)} bytes, more than {MAX_PRIVATE_FILE}")
        try:
            fields = bencoding.decode(data, max_size=MAX_PRIVATE_FILE)
        except bencoding.BencodeError as error:
            raise TransportError(f"private HLS file: {error}") from None
        if not isinstance(fields, dict) or fields.get(b"swarmcast_hls_private") != PRIVATE_FORMAT:
            raise TransportError("not a private HLS transport file (no 'swarmcast_hls_private' = 1)")
        if set(fields) != _PRIVATE_KEYS:
            raise TransportError("private HLS file: keys must be exactly " + ", ".join(sorted(
                k.decode() for k in _PRIVATE_KEYS)))  # fmt: skip
        transport, manifest, key = fields[b"transport"], fields[b"hls_manifest"], fields[b"private_key"]
        if not isinstance(transport, bytes) or not isinstance(manifest, bytes) or not isinstance(key, bytes):
            raise TransportError("private HLS file: 'transport', 'hls_manifest', 'private_key' must be strings")
        if len(key) != 32:
            raise TransportError("private HLS file key 'private_key' is not a 32-byte Ed25519 key")
        try:
            url = check_hls_url(manifest.decode())
        except (UnicodeDecodeError, ValueError) as error:
            raise TransportError(f"private HLS file key 'hls_manifest': {error}") from None
        private = cls(transport, url, key)
        descriptor = private.descriptor  # TransportError if the embedded file is not a valid transport file
        if public_key_bytes(private.key()) != descriptor.public_key:
            raise TransportError("private HLS file: 'private_key' does not match the transport file's public key")
        return private


def is_private_hls_file(data: bytes) -> bool:
    return data.startswith(b"d") and b"21:swarmcast_hls_private" in data[:MAX_PRIVATE_FILE]


def create_hls_transport(descriptor_without_key: Descriptor, manifest: str) -> tuple[Descriptor, PrivateHlsFile]:
    """A new broadcast key; the public descriptor (``descriptor_without_key`` with it) and the private file."""
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())  # fmt: skip
    descriptor = replace(descriptor_without_key, public_key=public_key_bytes(key))
    return descriptor, PrivateHlsFile(descriptor.encode(), manifest, raw)


def write_file(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Atomically; a secret file is created mode 0600."""
    write_file_atomically(path, data, mode=0o600 if secret else 0o644, durable=secret)


def sauth_pem(private: PrivateHlsFile) -> bytes:
    """The key as a ``.sauth`` holds it (PEM, PKCS#8: transport.load_or_create_key)."""
    return private.key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())  # fmt: skip
