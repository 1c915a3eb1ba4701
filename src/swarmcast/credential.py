"""Credentials: the broadcaster's signed word that a peer is its source or one of its support nodes.

How this works. The handshake's ``SOURCE`` and ``SEEDER`` flags are claims anyone can make, and the swarm treats
such peers specially (a source serves only support nodes while any wants data; engines spare the broadcaster's
nodes; a source's PEX is dialled first). So the special treatment is given only for a *credential*: a short
statement signed with the broadcast's Ed25519 key (the private half of the descriptor's ``public_key``, the key
that signs every piece) saying "the holder at IP ``ip`` (listen port ``port``, 0 = any) is this broadcast's
source | support node until Unix time ``expires``". A peer sends its credential in a ``CREDENTIAL`` frame right
after the handshake; the receiver checks the signature against the descriptor's key, the content id, the expiry
against its own clock and the IP against the connection's remote address. A credential copied off the wire is
worth nothing from any other IP, and one that is not refreshed lapses (docs/protocol.md §19 has the bytes).

Sans-IO: nothing here reads a clock or a socket; ``now`` is Unix time in seconds, passed in.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import Enum, IntEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from swarmcast.wire.messages import CONTENT_ID_LENGTH, MAX_CREDENTIAL_SIZE, SIGNATURE_LENGTH

CREDENTIAL_VERSION = 1
# Prepended to the signed bytes so a credential signature can never be taken for a piece signature or back.
_SIGNING_CONTEXT = b"swarmcast credential v1\x00"
_HEADER = struct.Struct(">BB20sQB")  # version, role, content id, expires, address family
_PORT = struct.Struct(">H")
_ADDRESS_SIZES = {4: 4, 6: 16}
MIN_CREDENTIAL_SIZE = _HEADER.size + 4 + _PORT.size + SIGNATURE_LENGTH  # 101: an IPv4 holder
assert _HEADER.size + 16 + _PORT.size + SIGNATURE_LENGTH == MAX_CREDENTIAL_SIZE  # 113: an IPv6 holder

CREDENTIAL_LIFETIME = 600.0  # seconds a credential the source issues is valid (--credential-lifetime)
MIN_CREDENTIAL_LIFETIME = 10.0  # holders refresh at half, so shorter would mean a fetch every few seconds
MAX_CREDENTIAL_LIFETIME = 86400.0  # a credential of a node the operator removed lasts at most this long
CLOCK_SKEW = 60.0  # seconds a receiver's clock may be ahead of the issuer's before a fresh credential looks expired
MAX_ISSUED = 1024  # credentials the issuer keeps signed (one per holder address); beyond it the cache is reset


class CredentialRole(IntEnum):
    SOURCE = 1  # the broadcast's source node (also a seeder)
    SUPPORT = 2  # one of the broadcaster's support nodes


class CredentialFault(Enum):
    MALFORMED = "malformed"  # not a credential at all: the sender broke the protocol
    BAD_SIGNATURE = "bad signature"  # not signed by this broadcast's key: a forgery
    WRONG_CONTENT = "wrong content id"  # signed by the key, for another broadcast
    WRONG_ROLE = "wrong role"
    WRONG_ADDRESS = "wrong address"  # issued to another IP or listen port: copied off the wire, or behind NAT
    EXPIRED = "expired"


class CredentialError(ValueError):
    def __init__(self, fault: CredentialFault, detail: str = "") -> None:
        super().__init__(f"{fault.value}: {detail}" if detail else fault.value)
        self.fault = fault


def normalise_ip(text: str) -> str:
    """The canonical text of an IP address; IPv4-mapped IPv6 (what a dual-stack socket reports) as IPv4."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


@dataclass(frozen=True)
class Credential:
    role: CredentialRole
    content_id: bytes
    expires: int  # Unix seconds
    ip: str  # normalised (see normalise_ip)
    port: int  # the holder's listen port; 0 = any
    signature: bytes = b""

    def body(self) -> bytes:
        """The signed part: everything but the signature."""
        address = ipaddress.ip_address(self.ip)
        family = 4 if address.version == 4 else 6
        header = _HEADER.pack(CREDENTIAL_VERSION, int(self.role), self.content_id, self.expires, family)
        return header + address.packed + _PORT.pack(self.port)

    def encode(self) -> bytes:
        return self.body() + self.signature


def make_credential(
    key: Ed25519PrivateKey, *, role: CredentialRole, content_id: bytes, ip: str, port: int, expires: int
) -> bytes:
    """A signed credential. Raises ValueError on bad arguments (our bug, not a peer's)."""
    if len(content_id) != CONTENT_ID_LENGTH or not 0 <= port <= 0xFFFF or not 0 <= expires < 2**64:
        raise ValueError("bad credential fields")
    unsigned = Credential(role, content_id, expires, normalise_ip(ip), port)
    body = unsigned.body()
    return body + key.sign(_SIGNING_CONTEXT + body)


def decode_credential(data: bytes) -> Credential:
    """Parse (not verify) a credential; any input but a well-formed one raises CredentialError(MALFORMED)."""
    if not MIN_CREDENTIAL_SIZE <= len(data) <= MAX_CREDENTIAL_SIZE:
        raise CredentialError(CredentialFault.MALFORMED, f"{len(data)} bytes")
    version, role, content_id, expires, family = _HEADER.unpack_from(data)
    if version != CREDENTIAL_VERSION:
        raise CredentialError(CredentialFault.MALFORMED, f"version {version}")
    try:
        role = CredentialRole(role)
    except ValueError:
        raise CredentialError(CredentialFault.MALFORMED, f"role {role}") from None
    size = _ADDRESS_SIZES.get(family)
    if size is None:
        raise CredentialError(CredentialFault.MALFORMED, f"address family {family}")
    end = _HEADER.size + size + _PORT.size
    if len(data) != end + SIGNATURE_LENGTH:
        raise CredentialError(CredentialFault.MALFORMED, f"{len(data)} bytes for address family {family}")
    raw = data[_HEADER.size : _HEADER.size + size]
    address = ipaddress.IPv4Address(raw) if family == 4 else ipaddress.IPv6Address(raw)
    (port,) = _PORT.unpack_from(data, _HEADER.size + size)
    return Credential(role, content_id, int(expires), normalise_ip(str(address)), int(port), data[end:])


class CredentialVerifier:
    """Checks credentials against one broadcast's public key (parsed once) and content id."""

    def __init__(self, public_key: bytes, content_id: bytes) -> None:
        self._key = Ed25519PublicKey.from_public_bytes(public_key)
        self.content_id = content_id

    def check_signature(self, data: bytes) -> Credential:
        """Well-formed and signed by this broadcast's key (for any content id, role, holder or time)."""
        credential = decode_credential(data)
        try:
            self._key.verify(credential.signature, _SIGNING_CONTEXT + data[: -SIGNATURE_LENGTH])
        except InvalidSignature:
            raise CredentialError(CredentialFault.BAD_SIGNATURE) from None
        return credential

    def verify(
        self, data: bytes, *, now: float, remote_ip: str | None, listen_port: int | None,
        roles: frozenset[CredentialRole] = frozenset(CredentialRole),
    ) -> Credential:  # fmt: skip
        """The credential if it names this broadcast, one of ``roles``, and the holder, and has not expired.

        ``remote_ip``/``listen_port`` are what the connection shows of the peer presenting it (None: not checked,
        for a node adopting a credential granted to itself). Raises CredentialError naming the first fault.
        """
        credential = self.check_signature(data)
        if credential.content_id != self.content_id:
            raise CredentialError(CredentialFault.WRONG_CONTENT, credential.content_id.hex())
        if credential.role not in roles:
            raise CredentialError(CredentialFault.WRONG_ROLE, credential.role.name)
        if remote_ip is not None:
            try:
                ip = normalise_ip(remote_ip)
            except ValueError:
                ip = remote_ip
            if ip != credential.ip:
                raise CredentialError(CredentialFault.WRONG_ADDRESS, f"issued to {credential.ip}, presented by {ip}")
        if listen_port is not None and credential.port not in (0, listen_port):
            raise CredentialError(CredentialFault.WRONG_ADDRESS, f"issued to port {credential.port}, not {listen_port}")
        if now >= credential.expires + CLOCK_SKEW:
            raise CredentialError(CredentialFault.EXPIRED, f"at {credential.expires}")
        return credential


class CredentialIssuer:
    """The source's side: signs its own credential and those of the support nodes the operator authorised.

    Signatures are cached per holder and re-made once less than half their lifetime is left, so refreshing
    everyone every second costs a dictionary lookup, and a refreshed credential differs from the one sent
    (which is how the swarm knows to send it again).
    """

    def __init__(
        self, key: Ed25519PrivateKey, content_id: bytes, *, support_nodes: tuple[tuple[str, int], ...] = (),
        lifetime: float = CREDENTIAL_LIFETIME,
    ) -> None:  # fmt: skip
        self._key = key
        self.content_id = content_id
        self.lifetime = lifetime
        # The operator's list (--support-node IP[:PORT]); port 0 = any listen port from that IP.
        self.support_nodes: set[tuple[str, int]] = {(normalise_ip(ip), port) for ip, port in support_nodes}
        self._issued: dict[tuple[CredentialRole, str, int], tuple[bytes, int]] = {}

    def authorise(self, ip: str, port: int = 0) -> None:
        self.support_nodes.add((normalise_ip(ip), port))

    def issue(self, role: CredentialRole, ip: str, port: int, now: float) -> bytes:
        holder = (role, normalise_ip(ip), port)
        cached = self._issued.get(holder)
        if cached is not None and cached[1] - now > self.lifetime / 2:
            return cached[0]
        if len(self._issued) >= MAX_ISSUED:
            self._issued.clear()
        expires = int(now + self.lifetime)
        data = make_credential(self._key, role=role, content_id=self.content_id, ip=ip, port=port, expires=expires)
        self._issued[holder] = (data, expires)
        return data

    def authorised_port(self, ip: str, listen_port: int) -> int | None:
        """The port to write into a grant for a peer at ``ip`` announcing ``listen_port``; None: not authorised."""
        try:
            ip = normalise_ip(ip)
        except ValueError:
            return None
        if (ip, listen_port) in self.support_nodes and listen_port > 0:
            return listen_port
        if (ip, 0) in self.support_nodes:
            return 0
        return None

    def grant_for(self, ip: str, listen_port: int, now: float) -> bytes | None:
        """A support credential for a peer the operator listed, None for anyone else."""
        port = self.authorised_port(ip, listen_port)
        return None if port is None else self.issue(CredentialRole.SUPPORT, ip, port, now)

    def own_credential(
        self, local_ip: str, now: float, *, role: CredentialRole = CredentialRole.SOURCE
    ) -> bytes | None:
        """Our own, for the address a peer sees us at (the connection's local IP); None when that is unknown."""
        try:
            address = ipaddress.ip_address(normalise_ip(local_ip))
        except ValueError:
            return None
        if address.is_unspecified:
            return None
        return self.issue(role, str(address), 0, now)
