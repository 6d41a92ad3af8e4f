"""Bearer tokens of the ``serve`` block: who is calling, and may they do this."""

from __future__ import annotations

import hashlib
import hmac

from datalayer.config.serve import Scope, TokenConfig
from datalayer.serve.errors import HttpError

_CHALLENGE = ((b"www-authenticate", b'Bearer realm="datalayer"'),)


class Auth:
    """Checks ``Authorization: Bearer <token>`` against every configured token.

    Tokens are compared as SHA-256 digests with ``hmac.compare_digest``, every one of them on
    every call, so neither the time taken nor an early exit tells a caller how close a guess
    came, or which token it nearly matched. Without tokens every call is allowed (the server
    then binds to loopback only, unless told ``--insecure``).
    """

    def __init__(self, tokens: dict[str, TokenConfig], secrets: dict[str, bytes]) -> None:
        self.tokens = tokens
        self._digests = [(name, hashlib.sha256(secrets[name]).digest()) for name in tokens]

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    def caller(self, header: bytes | None) -> str | None:
        """The name of the token presented (None when tokens are off); 401 for none or a
        wrong one."""
        if not self.enabled:
            return None
        scheme, _, presented = (header or b"").partition(b" ")
        if scheme.lower() != b"bearer" or not presented.strip():
            raise HttpError(
                401, "this server needs 'Authorization: Bearer <token>'", "headers", _CHALLENGE
            )
        digest = hashlib.sha256(presented.strip()).digest()
        matched = None
        for name, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                matched = name
        if matched is None:
            raise HttpError(
                401, "the bearer token is not one this server knows", "headers", _CHALLENGE
            )
        return matched

    def sees(self, caller: str | None, pattern: str) -> bool:
        """Whether an error may name ``pattern`` to this caller."""
        return caller is None or any(
            self.tokens[caller].allows(pattern, scope) for scope in ("read", "push")
        )

    def check(self, caller: str | None, pattern: str, scope: Scope) -> None:
        """403 when the caller's token does not allow ``scope`` on ``pattern``."""
        if caller is None:
            return
        if not self.tokens[caller].allows(pattern, scope):
            raise HttpError(403, f"token '{caller}' may not {scope} pattern '{pattern}'", "headers")
