"""Broadcast keys (``.sauth``) kept by the registry, encrypted at rest with AES-256-GCM.

How this works. The registry holds one 256-bit key, the *key-encryption key*, in a file of its own (``--key-file``;
by default ``<state-dir>/registry.key``, created mode 0600 when absent). Every ``.sauth`` the fleet pushes is
sealed with it before it reaches the database: ``b"\\x01" + nonce(12) + AES-GCM(plaintext, aad=b"sauth:" + name)``.
The stream's name is the associated data, so a sealed key copied onto another stream's row does not open. The
database stores the key file's id (the first 16 hex of SHA-256 over ``b"swarmcast-registry-key-id" + key``) next to
each sealed key, so a registry started with the wrong key file is refused at start (one line) instead of failing
on the first restore. A copy of the database alone (a backup, a dump, a PostgreSQL replica) holds no usable key.

Why AES-GCM and not Fernet: both are in ``cryptography``; AES-GCM binds the stream name as associated data without
a second MAC, and its 29 bytes of overhead per key (version, nonce, tag) are less than Fernet's base64 frame.
Nonces are random (96 bits): with one key per registry and a handful of writes per stream, collisions are out of
reach.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DEFAULT_KEY_FILE = "registry.key"
KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = 1
MAX_KEY_FILE_BYTES = 1024
_HEADER = "swarmcast-registry-key-v1 "  # the file is one line: this header and the key in URL-safe base64


class KeyFileError(Exception):
    """The key file cannot be used (one line naming the flag and the file)."""


class SealError(Exception):
    """A sealed key does not open with this key file (wrong key, another stream's row, or damaged)."""


class KeyBox:
    """Seals and opens broadcast keys with the registry's key-encryption key."""

    def __init__(self, key: bytes, path: Path | None = None) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a registry key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = key_id(key)
        self.path = path

    def __repr__(self) -> str:  # never the key, whatever prints this object
        return f"KeyBox(key_id={self.key_id!r}, path={str(self.path)!r})"

    def seal(self, name: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return bytes([VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, _aad(name))

    def open(self, name: str, sealed: bytes) -> bytes:
        if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[0] != VERSION:
            raise SealError(f"{name}: not a sealed key of this registry")
        nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, _aad(name))
        except InvalidTag:
            raise SealError(f"{name}: the stored key does not open with this key file") from None


def _aad(name: str) -> bytes:
    return b"sauth:" + name.encode()


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"swarmcast-registry-key-id" + key).hexdigest()[:16]


def load_or_create(path: Path) -> KeyBox:
    """The key in ``path``; a new random one written there (mode 0600, never replacing a file) when absent.

    Refused: a file that group or others may read (as ssh refuses such a private key), one that is not a regular
    file, and one whose content is not a key this code wrote."""
    try:
        os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise KeyFileError(f"--key-file {path}: a symlink to nothing; not followed") from None
        return _create(path)
    except OSError as error:
        raise KeyFileError(f"--key-file {path}: {error.strerror or error}") from None
    return _load(path)


def _load(path: Path) -> KeyBox:
    try:
        info = os.stat(path)
    except OSError as error:
        raise KeyFileError(f"--key-file {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"--key-file {path}: not a regular file")
    if info.st_mode & 0o077:
        raise KeyFileError(f"--key-file {path}: mode {stat.S_IMODE(info.st_mode):04o} lets others read it "
                           f"(chmod 600 {path})")  # fmt: skip
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise KeyFileError(f"--key-file {path}: {error.strerror or error}") from None
    return KeyBox(_parse(path, data), path)


def _parse(path: Path, data: bytes) -> bytes:
    text = data.decode("ascii", "replace").strip()
    if len(data) > MAX_KEY_FILE_BYTES or not text.startswith(_HEADER):
        raise KeyFileError(f"--key-file {path}: not a swarmcast registry key file (it starts "
                           f"{_HEADER.strip()!r})")  # fmt: skip
    try:
        key = base64.urlsafe_b64decode(text[len(_HEADER) :].strip().encode())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"--key-file {path}: the key is not {KEY_BYTES} bytes of base64")
    return key


def _create(path: Path) -> KeyBox:
    key = os.urandom(KEY_BYTES)
    line = (_HEADER + base64.urlsafe_b64encode(key).decode() + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # O_EXCL: never through a planted symlink, never over a file another process just wrote.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return _load(path)  # another registry process created it first: use that one
    except OSError as error:
        raise KeyFileError(f"--key-file {path}: cannot create it: {error.strerror or error}") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return KeyBox(key, path)
