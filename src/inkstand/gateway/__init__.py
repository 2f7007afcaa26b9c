"""The gateway: who may call (keys and scopes), how often (rate limits), and what they used.

    gateway = Gateway(settings, keys, usage)
    admission = gateway.admit(authorization_header)   # 401 / 429 (requests per minute)
    admission.authorize(model)                         # 403 outside the key's scope
    admission.reserve(prompt + max_tokens)             # 429 (tokens per minute)
    ...
    future = gateway.finish(admission, record)         # settle tokens, record usage

`api/gateway.py` drives it once per request. With `gateway = false` in the settings keys
and scopes are still checked, but nothing is rate limited or recorded (the benchmark's
baseline).
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

from inkstand.config import Settings
from inkstand.errors import AuthenticationError, PermissionError_
from inkstand.gateway.limiter import Hold, RateLimiter
from inkstand.store import KeyRecord, KeyStore, UsageLog, UsageRecord

__all__ = ["Admission", "Gateway", "RateLimiter"]

NO_KEY_HINT = (
    " This server has no usable API key; its operator can create one with "
    "`inkstand keys create --name NAME`."
)


@dataclass(eq=False)
class Admission:
    """One authenticated request's standing with the gateway."""

    gateway: Gateway
    key: KeyRecord
    request_hold: Hold | None = None
    token_hold: Hold | None = None

    def authorize(self, model: str) -> None:
        if not self.key.allows(model):
            scope = ", ".join(self.key.models or ())
            raise PermissionError_(
                f"This API key may not use the model `{model}`; it may use: {scope}.",
                extras={"model": model},
            )

    def reserve(self, tokens: int) -> None:
        tpm = self.gateway.tpm(self.key)
        try:
            self.token_hold = self.gateway.limiter.reserve(self.key.id, tpm, tokens)
        except Exception:
            self.gateway.limiter.release(self.request_hold)  # refused: not counted as a request
            raise

    def check(self, tokens: int) -> None:
        """Refuse as `reserve(tokens)` would now, reserving nothing (for work done before
        the reservation, such as the `graph` tool's sub-questions)."""
        self.reserve(tokens)
        self.gateway.limiter.release(self.token_hold)
        self.token_hold = None


class Gateway:
    def __init__(self, settings: Settings, keys: KeyStore, usage: UsageLog) -> None:
        self.enabled = settings.gateway
        self.default_rpm = settings.rpm
        self.default_tpm = settings.tpm
        self.keys = keys
        self.usage = usage
        self.limiter = RateLimiter()

    def rpm(self, key: KeyRecord) -> int:
        if not self.enabled:
            return 0
        return self.default_rpm if key.rpm is None else key.rpm

    def tpm(self, key: KeyRecord) -> int:
        if not self.enabled:
            return 0
        return self.default_tpm if key.tpm is None else key.tpm

    def authenticate(self, header: str | None) -> KeyRecord:
        """The caller's key; 401 if it is missing, unknown, revoked or expired."""
        try:
            return self._authenticate(header)
        except AuthenticationError as exc:
            if self.keys.has_usable():
                raise
            raise AuthenticationError(exc.description + NO_KEY_HINT) from None

    def _authenticate(self, header: str | None) -> KeyRecord:
        if not header:
            raise AuthenticationError("Missing API key: send `Authorization: Bearer <key>`.")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthenticationError("Malformed Authorization header: expected `Bearer <key>`.")
        key = self.keys.lookup(secret.strip())
        if key is None:
            raise AuthenticationError("Invalid API key.")
        if key.revoked_at is not None:
            raise AuthenticationError(f"This API key ({key.id}) was revoked.")
        if key.expired():
            raise AuthenticationError(f"This API key ({key.id}) expired at {key.expires_at}.")
        return key

    def admit(self, key: KeyRecord) -> Admission:
        """Count the request against the key's requests per minute (429 when over)."""
        return Admission(self, key, self.limiter.admit(key.id, self.rpm(key)))

    def finish(self, admission: Admission | None, record: UsageRecord) -> Future | None:
        """Settle the token reservation; record the request (None when recording is off)."""
        if admission is not None and not _cut_short(record):
            used = record.prompt_tokens + record.completion_tokens
            self.limiter.settle(admission.token_hold, used)
        if not self.enabled:
            return None
        return self.usage.record(record)


def _cut_short(record: UsageRecord) -> bool:
    """Generation ran but never finished (the client left, or the stream failed midway).

    The engine reports token counts only when a choice finishes, so such a request keeps its
    whole reservation: leaving just before the end must not make an answer free.
    """
    return record.finish_reason is None and record.status in (200, 499)
