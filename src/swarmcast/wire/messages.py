"""Messages of the swarmcast peer protocol (docs/protocol.md describes them byte by byte).

Every message is a frozen dataclass; ``codec`` turns them into frames and back. Limits are named here so that
the codec checks every length read off the wire against them before it allocates anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

PROTOCOL_MAGIC = b"SWCP"
PROTOCOL_VERSION = 1
HANDSHAKE_LENGTH = 48
CONTENT_ID_LENGTH = 20
PEER_ID_LENGTH = 20
SIGNATURE_LENGTH = 64

MAX_PIECE_SIZE = 512 * 1024
MAX_WINDOW_PIECES = 8192
MAX_PEX_PEERS = 50
MAX_METADATA_SIZE = 64 * 1024
MAX_INDEX = 2**63 - 1
# A CREDENTIAL's signed statement (swarmcast/credential.py): 49 bytes of fields for an IPv6 holder + signature.
MAX_CREDENTIAL_SIZE = 1 + 1 + CONTENT_ID_LENGTH + 8 + 1 + 16 + 2 + SIGNATURE_LENGTH
# A PIECE frame is the largest one: type, index, flags, signature, data.
MAX_FRAME_LENGTH = 1 + 8 + 1 + SIGNATURE_LENGTH + MAX_PIECE_SIZE


class MessageType(IntEnum):
    KEEPALIVE = 0
    CHOKE = 1
    UNCHOKE = 2
    INTERESTED = 3
    NOT_INTERESTED = 4
    WINDOW = 5
    HAVE = 6
    REQUEST = 7
    CANCEL = 8
    PIECE = 9
    REJECT = 10
    PEX = 11
    GOODBYE = 12
    METADATA_REQUEST = 13
    METADATA = 14
    CREDENTIAL = 15


class HandshakeFlags(IntFlag):
    """Claims only: no peer gets source or support-node treatment for them, only for a CREDENTIAL."""

    NONE = 0
    SOURCE = 1  # the sender is the broadcast's source node
    SEEDER = 2  # the sender is a support/source node that uploads but plays nothing


class PieceFlags(IntFlag):
    NONE = 0
    RANDOM_ACCESS = 1  # the piece opens with PAT, PMT and a video keyframe: a player may start here
    DISCONTINUITY = 2  # first piece after the source (re)started: numbering jumped, timestamps may too
    METADATA = 4  # an HLS segment index (swarmcast/segment_index.py), never passed to players


class CredentialKind(IntEnum):
    PRESENT = 0  # the sender's own credential: "I am the broadcaster's source / support node"
    GRANT = 1  # issued by the source to the receiver: "present this as yours"


class GoodbyeReason(IntEnum):
    SHUTDOWN = 0
    BANNED = 1
    PROTOCOL_ERROR = 2
    TOO_MANY_PEERS = 3
    TIMEOUT = 4
    UNKNOWN_CONTENT = 5
    DUPLICATE = 6
    OTHER = 7


@dataclass(frozen=True)
class Handshake:
    content_id: bytes
    peer_id: bytes
    listen_port: int
    flags: HandshakeFlags = HandshakeFlags.NONE
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class KeepAlive:
    pass


@dataclass(frozen=True)
class Choke:
    pass


@dataclass(frozen=True)
class Unchoke:
    pass


@dataclass(frozen=True)
class Interested:
    pass


@dataclass(frozen=True)
class NotInterested:
    pass


@dataclass(frozen=True)
class Window:
    """Which pieces the sender holds: ``first`` .. ``first + len(have) - 1``, and which of them are random-access."""

    first: int
    have: tuple[bool, ...]
    random_access: tuple[bool, ...]


@dataclass(frozen=True)
class Have:
    index: int
    flags: PieceFlags


@dataclass(frozen=True)
class Request:
    index: int


@dataclass(frozen=True)
class Cancel:
    index: int


@dataclass(frozen=True)
class Piece:
    index: int
    flags: PieceFlags
    signature: bytes
    data: bytes


@dataclass(frozen=True)
class Reject:
    index: int


@dataclass(frozen=True)
class Pex:
    peers: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Goodbye:
    reason: GoodbyeReason


@dataclass(frozen=True)
class MetadataRequest:
    pass


@dataclass(frozen=True)
class Metadata:
    """The bencoded transport descriptor; empty when the sender does not have it yet."""

    descriptor: bytes


@dataclass(frozen=True)
class CredentialMessage:
    """A credential (swarmcast/credential.py), opaque to the codec apart from its bounded length."""

    kind: CredentialKind
    credential: bytes


Message = (
    KeepAlive
    | Choke
    | Unchoke
    | Interested
    | NotInterested
    | Window
    | Have
    | Request
    | Cancel
    | Piece
    | Reject
    | Pex
    | Goodbye
    | MetadataRequest
    | Metadata
    | CredentialMessage
)
