"""JWTs as Supabase signs and checks them (tokens.py), with no network: what `check_token` accepts, and each
refusal in Supabase Realtime's words."""

from __future__ import annotations

import time
from typing import Any

import jwt
import psycopg
import pytest

from attendance_kit.demo import ADA
from attendance_kit.realtime.tokens import DEFAULT_JWT_SECRET, TokenRefused, check_token, sign, token_for

SECRET = "a-test-secret-long-enough-for-hs512-" + "x" * 32
NOW = 2_000_000_000.0


def refusal(token: str, secret: str = SECRET, now: float | None = NOW) -> tuple[str, str, str]:
    with pytest.raises(TokenRefused) as refused:
        check_token(token, secret, now)
    return refused.value.kind, str(refused.value), refused.value.reason


def test_a_good_token_gives_its_claims() -> None:
    claims = {"role": "authenticated", "sub": "ada", "exp": int(NOW) + 60, "iat": int(NOW)}
    assert check_token(sign(claims, SECRET), SECRET, NOW) == claims
    for algorithm in ("HS384", "HS512"):  # Supabase's secret may sign with either too
        assert check_token(jwt.encode(claims, SECRET, algorithm=algorithm), SECRET, NOW) == claims


def test_an_expired_token_says_for_how_long_as_of_now() -> None:
    token = sign({"role": "anon", "exp": int(NOW) - 42}, SECRET)
    assert refusal(token) == ("InvalidJWTToken", "Token has expired 42 seconds ago",
                              "InvalidJWTToken: Token has expired 42 seconds ago")
    assert refusal(sign({"role": "anon", "exp": int(NOW)}, SECRET))[1] == "Token has expired 0 seconds ago"
    assert check_token(token, SECRET, NOW - 43)["role"] == "anon"  # a second before, it held


def test_without_now_the_clock_decides() -> None:
    assert check_token(sign({"role": "anon", "exp": int(time.time()) + 60}))["role"] == "anon"
    assert refusal(sign({"role": "anon", "exp": int(time.time()) - 100}), DEFAULT_JWT_SECRET, None)[1].startswith(
        "Token has expired 10")


def test_a_token_signed_with_another_secret_is_refused() -> None:
    forged = sign({"role": "service_role", "exp": int(NOW) + 60}, "another-secret-of-at-least-32-characters")
    assert refusal(forged) == ("JwtSignatureError", "Failed to validate JWT signature",
                               "JwtSignatureError: Failed to validate JWT signature")


@pytest.mark.parametrize("token", [
    "not-a-jwt", "", "a.b.c", "sb_publishable_0123456789abcdef",  # a project's key is not a JWT either
    jwt.encode({"role": "anon", "exp": int(NOW) + 60}, None, algorithm="none"),  # unsigned
])
def test_what_is_not_a_jwt_signed_as_supabase_signs_is_malformed(token: str) -> None:
    assert refusal(token) == ("MalformedJWT", "The token provided is not a valid JWT",
                              "MalformedJWT: The token provided is not a valid JWT")


def test_another_token_s_signature_does_not_fit() -> None:
    header, claims, _ = sign({"role": "service_role", "exp": int(NOW) + 60}, SECRET).split(".")
    signature = sign({"role": "anon", "exp": int(NOW) + 60}, SECRET).split(".")[2]
    assert refusal(f"{header}.{claims}.{signature}")[0] == "JwtSignatureError"


@pytest.mark.parametrize("claims", [{"role": "anon"}, {"exp": NOW + 60}, {"sub": "x"}])
def test_role_and_exp_are_required(claims: dict[str, Any]) -> None:
    assert refusal(sign(claims, SECRET)) == ("InvalidJWTToken", "Fields `role` and `exp` are required in JWT",
                                             "InvalidJWTToken: Fields `role` and `exp` are required in JWT")


@pytest.mark.parametrize("times", [{"exp": float("inf")}, {"exp": float("nan")}, {"exp": 10**400},
                                   {"exp": 1e11}, {"exp": -1}, {"exp": "2000000060"}, {"exp": True},
                                   {"exp": NOW + 60, "iat": float("inf")}, {"exp": NOW + 60, "iat": "now"}])
def test_exp_and_iat_must_be_times_a_clock_could_show(times: dict[str, Any]) -> None:
    assert refusal(sign({"role": "anon", **times}, SECRET)) == (
        "InvalidJWTToken", "Fields `exp` and `iat` must be numbers",
        "InvalidJWTToken: Fields `exp` and `iat` must be numbers")


def test_a_persona_s_token_carries_the_claims_supabase_auth_would(conn: psycopg.Connection) -> None:
    token = token_for(conn, ADA.email, SECRET, expires_in=120)
    claims = check_token(token, SECRET)
    assert (claims["sub"], claims["role"], claims["exp"] - claims["iat"]) == (ADA.id, "authenticated", 120)
    assert check_token(token_for(conn, "anon", SECRET), SECRET)["role"] == "anon"
