"""JWTs as Supabase issues and checks them: HS256 (or HS384/HS512) signed with the project's secret.

The local default secret is the one Supabase's local stack uses, so a token from `supabase start` works with the
kit's gateway and the other way round. `token_for` makes a persona's token with the claims Supabase Auth would put
in it; `check_token` checks a token as Supabase Realtime does and names what is wrong in Realtime's words.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import psycopg

from ..connection import resolve_user
from ..errors import KitError

DEFAULT_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"  # Supabase's local stack's
ALGORITHMS = ["HS256", "HS384", "HS512"]


class TokenRefused(KitError):
    """A token Supabase Realtime would refuse: `kind` is Realtime's error name, the message its text."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def reason(self) -> str:
        """As a refused join's reply says it."""
        return f"{self.kind}: {self}"


def sign(claims: dict[str, Any], secret: str = DEFAULT_JWT_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def token_for(conn: psycopg.Connection, who: str | uuid.UUID, secret: str = DEFAULT_JWT_SECRET, *,
              expires_in: float = 3600) -> str:
    """A signed token for a persona ('anon', 'service_role', a user's email or UUID), valid for `expires_in` s."""
    _role, claims = resolve_user(conn, who)
    now = int(time.time())
    return sign({**claims, "iat": now, "exp": now + int(expires_in)}, secret)


def check_token(token: str, secret: str = DEFAULT_JWT_SECRET, now: float | None = None) -> dict[str, Any]:
    """The token's claims, or `TokenRefused` with Supabase Realtime's reason; expired as of `now` (default: the
    clock's time)."""
    try:
        claims = jwt.decode(token, secret, algorithms=ALGORITHMS, options={
            "verify_exp": False, "verify_aud": False, "verify_iat": False, "verify_nbf": False})  # checked below
    except jwt.InvalidSignatureError:
        raise TokenRefused("JwtSignatureError", "Failed to validate JWT signature") from None
    except jwt.PyJWTError:
        raise TokenRefused("MalformedJWT", "The token provided is not a valid JWT") from None
    if not isinstance(claims, dict) or "role" not in claims or "exp" not in claims:
        raise TokenRefused("InvalidJWTToken", "Fields `role` and `exp` are required in JWT")
    if not _a_time(claims["exp"]) or ("iat" in claims and not _a_time(claims["iat"])):
        raise TokenRefused("InvalidJWTToken", "Fields `exp` and `iat` must be numbers")
    expired_for = int((time.time() if now is None else now) - claims["exp"])
    if expired_for >= 0:
        raise TokenRefused("InvalidJWTToken", f"Token has expired {expired_for} seconds ago")
    return claims


def _a_time(value: Any) -> bool:
    """A number of seconds since 1970 that a clock could show: not NaN (no comparison holds), not 10**400."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e11
