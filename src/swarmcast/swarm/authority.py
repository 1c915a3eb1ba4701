"""Which peers are the broadcaster's: verifying the credentials peers present, presenting and granting ours.

How this works (sans-IO; the swarm calls in with its ``now``, and ``wall_offset`` turns that into Unix time,
the clock credentials are written in):

- A peer's status (``PeerSession.is_source`` / ``is_seeder``) is only ever a verified credential
  (swarmcast/credential.py) presented on that connection: signed by the descriptor's key, for this content id,
  issued to the connection's remote IP (and listen port, when the credential names one), not expired.
- A node without the descriptor cannot check signatures: the credential is kept, the peer is a viewer meanwhile,
  and it is checked on the first housekeeping after the descriptor arrives.
- Checking costs an Ed25519 verification, so a peer gets at most one per ``CHECK_INTERVAL``; newer credentials
  sent in between wait for the next housekeeping. A malformed or forged credential is a protocol violation (ban);
  one that is expired, for another IP or for another broadcast only leaves the peer a viewer (an honest node
  behind NAT or with a skewed clock does that).
- On attach, and whenever ours changes (refreshed), we present our own credential; the source grants a support
  credential to every peer the operator listed, and counts that peer as a support node at once. A support node
  adopts a grant (only from a peer proven to be the source), or a credential it fetched over HTTP with the access
  token, as its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from swarmcast.credential import (
    CLOCK_SKEW,
    Credential,
    CredentialError,
    CredentialFault,
    CredentialIssuer,
    CredentialRole,
    CredentialVerifier,
    decode_credential,
)
from swarmcast.swarm.peer import PeerSession
from swarmcast.wire.errors import ErrorCode, ProtocolError
from swarmcast.wire.messages import CredentialKind, CredentialMessage

log = logging.getLogger("swarmcast.swarm")

CHECK_INTERVAL = 1.0  # seconds: at most one signature check per peer this often
# Faults no honest peer makes: a ban. The others (expired, another IP, another broadcast) leave it a viewer.
_VIOLATIONS = {
    CredentialFault.MALFORMED: ErrorCode.MALFORMED_MESSAGE,
    CredentialFault.BAD_SIGNATURE: ErrorCode.BAD_SIGNATURE,
}


@dataclass
class AuthorityUpdate:
    """What housekeeping found: statuses changed (rechoke), credentials to send, peers to ban."""

    changed: bool = False
    outgoing: list[tuple[PeerSession, CredentialMessage]] = field(default_factory=list)
    offenders: list[tuple[PeerSession, ProtocolError]] = field(default_factory=list)


class Authority:
    def __init__(self, content_id: bytes, *, accept_grants: bool) -> None:
        self.content_id = content_id
        self.accept_grants = accept_grants  # support nodes take a credential the source grants them
        self.wall_offset = 0.0  # Unix time minus the swarm's clock (the node sets it; tests keep 0)
        self.issuer: CredentialIssuer | None = None  # a node holding the broadcast key: the source, a hot standby
        # The role we sign ourselves with when we hold the key: a hot standby stays a support node to its peers
        # even while it signs, so a primary that comes back still sends it HAVEs (docs/design.md, "Hot standby").
        self.own_role = CredentialRole.SOURCE
        self._verifier: CredentialVerifier | None = None
        self._own: bytes | None = None
        self._own_expires = 0

    def set_public_key(self, public_key: bytes) -> None:
        self._verifier = CredentialVerifier(public_key, self.content_id)

    def wall(self, now: float) -> float:
        return now + self.wall_offset

    # -- our own -----------------------------------------------------------------------------------------
    @property
    def own(self) -> bytes | None:
        return self._own

    def adopt(self, data: bytes, now: float) -> Credential:
        """Take a support credential issued to us (granted on the wire or fetched over HTTP) as our own.

        Raises CredentialError when it is not one (or not newer than the one we hold, which is kept)."""
        if self._verifier is None:
            raise CredentialError(CredentialFault.MALFORMED, "no descriptor to check it with")
        # The holder's address is not checked: we cannot know which of our addresses the issuer saw.
        credential = self._verifier.verify(
            data, now=self.wall(now), remote_ip=None, listen_port=None, roles=frozenset({CredentialRole.SUPPORT})
        )
        if credential.expires > self._own_expires:
            if self._own is None:
                log.info("support credential for %s:%d, valid until %d", credential.ip, credential.port,
                         credential.expires)  # fmt: skip
            self._own, self._own_expires = data, credential.expires
        return credential

    def _own_for(self, session: PeerSession, now: float) -> bytes | None:
        if self.issuer is not None:
            return self.issuer.own_credential(session.local_ip, self.wall(now), role=self.own_role)
        if self._own is not None and self.wall(now) < self._own_expires:
            return self._own
        return None

    def _grant_for(self, session: PeerSession, now: float) -> bytes | None:
        if self.issuer is None:
            return None
        return self.issuer.grant_for(session.remote_ip, session.handshake.listen_port, self.wall(now))

    # -- events ------------------------------------------------------------------------------------------
    def on_attach(self, session: PeerSession, now: float) -> list[CredentialMessage]:
        """The credentials to send a newly attached peer first: the grant we give it, and our own."""
        return self._outgoing(session, now)

    def receive(self, session: PeerSession, message: CredentialMessage, now: float) -> bool:
        """A CREDENTIAL from the peer; True when its status changed. Raises ProtocolError for a forgery."""
        if message.kind is CredentialKind.GRANT:
            # Only from the source (verified: it presents its own first). Anyone else could hand us a credential
            # copied off the wire for another holder, which would replace our good one and cost us our status.
            if self.accept_grants and self._verifier is not None and session.is_source:
                try:
                    self.adopt(message.credential, now)
                except CredentialError as error:
                    if error.fault in _VIOLATIONS:
                        raise ProtocolError(_VIOLATIONS[error.fault], f"granted credential: {error}") from None
                    log.info("ignoring a credential granted by %s: %s", session.remote_ip, error)
            return False
        state = session.credential
        state.received, state.unchecked = message.credential, True
        if now - state.checked_at < CHECK_INTERVAL:
            return False  # checked at the next housekeeping
        return self._check(session, now)

    def housekeeping(self, sessions: Iterable[PeerSession], now: float) -> AuthorityUpdate:
        """Once a second: pending checks, expiries, and our refreshed credentials to (re)send."""
        update = AuthorityUpdate()
        wall = self.wall(now)
        nothing_to_send = self.issuer is None and self._own is None  # an engine: most peers are viewers
        for session in sessions:
            state = session.credential
            if nothing_to_send and state.received is None and state.verified is None:
                continue  # the per-second pass costs the simulator's 10,000 peers nothing
            try:
                if state.unchecked and now - state.checked_at >= CHECK_INTERVAL:
                    update.changed |= self._check(session, now)
                elif state.verified is not None and wall >= state.verified.expires + CLOCK_SKEW:
                    log.info("credential of %s:%d expired", *session.address)
                    state.verified = self._granted(session, now)
                    update.changed = True
            except ProtocolError as error:
                update.offenders.append((session, error))
                continue
            was_seeder = state.verified is not None
            update.outgoing.extend((session, message) for message in self._outgoing(session, now))
            update.changed |= was_seeder != (state.verified is not None)  # a peer listed since it joined
        return update

    # -- internals ---------------------------------------------------------------------------------------
    def _outgoing(self, session: PeerSession, now: float) -> list[CredentialMessage]:
        state = session.credential
        messages: list[CredentialMessage] = []
        own = self._own_for(session, now)
        if own is not None and own != state.sent_own:  # first: a grant is taken only from a proven source
            state.sent_own = own
            messages.append(CredentialMessage(CredentialKind.PRESENT, own))
        grant = self._grant_for(session, now)
        if grant is not None and grant != state.sent_grant:
            state.sent_grant = grant
            # We issued it to this very connection's address: it is a support node now, before it echoes it.
            state.verified = decode_credential(grant)
            messages.append(CredentialMessage(CredentialKind.GRANT, grant))
        return messages

    def _granted(self, session: PeerSession, now: float) -> Credential | None:
        """The grant we gave this peer, while it lasts: our own word needs no echo."""
        grant = session.credential.sent_grant
        if grant is None:
            return None
        credential = decode_credential(grant)
        return credential if self.wall(now) < credential.expires + CLOCK_SKEW else None

    def _check(self, session: PeerSession, now: float) -> bool:
        state = session.credential
        if self._verifier is None or state.received is None:
            return False  # no key yet: a viewer until the descriptor comes
        before = state.verified
        state.unchecked, state.checked_at = False, now
        try:
            state.verified = self._verifier.verify(
                state.received, now=self.wall(now), remote_ip=session.remote_ip,
                listen_port=session.handshake.listen_port,
            )  # fmt: skip
        except CredentialError as error:
            if error.fault in _VIOLATIONS:
                raise ProtocolError(_VIOLATIONS[error.fault], f"credential: {error}") from None
            log.info("credential of %s:%d not accepted: %s", session.address[0], session.address[1], error)
            state.verified = self._granted(session, now)
        if state.verified is not None and before is None:
            log.info("%s:%d is the broadcast's %s", session.address[0], session.address[1],
                     state.verified.role.name.lower())  # fmt: skip
        return (before is None) != (state.verified is None) or (
            before is not None and state.verified is not None and before.role is not state.verified.role
        )
