"""The one exception tree; every error a client can see is an `InkstandError`.

    InkstandError(status, tpe, key)
    ├── BadRequestError            400 fail.badRequest.invalidParameters
    │   ├── ContextLengthError     400 prompt + max_tokens over the context window
    │   ├── UnsupportedFeatureError 400 valid Writer input we do not serve yet
    │   └── ModelNotFoundError     400 unknown or removed model id
    ├── AuthenticationError        401
    ├── PermissionError_           403
    ├── NotFoundError              404 unknown route, or an unknown id in the path
    ├── MethodNotAllowedError      405
    ├── RequestTimeoutError        408 the request head came too slowly (`api/protocol.py`)
    ├── PayloadTooLargeError       413
    ├── RequestLineTooLongError    414 refused by the HTTP protocol (`api/protocol.py`)
    ├── RateLimitError             429 carries retry_after
    │   └── RequestOverLimitError  429 one request larger than the whole limit: never retry
    ├── HeadersTooLargeError       431 refused by the HTTP protocol, before the app
    ├── EngineError                500 the engine failed a request
    │   └── ChatTemplateError      500 the model's chat template fails: never retry
    ├── BlobMissingError           500 a stored file's bytes are gone from the data dir
    ├── OverloadedError            503 carries retry_after
    │   └── ModelFailedError       503 the model failed to load: never retry
    └── InsufficientStorageError   507 an upload would pass `max_storage_bytes`: never retry

Errors are raised where they happen and rendered once, by `inkstand.api.errors`.
"""

from __future__ import annotations


class InkstandError(Exception):
    """Base of every client-visible error: an HTTP status plus Writer's `tpe` and `key`."""

    status = 500
    tpe = "InternalServerError"
    key = "fail.internalServerError.generic"
    retry_after: float | None = None
    should_retry: bool | None = None

    def __init__(self, description: str, *, extras: dict | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.extras = extras or {}


class BadRequestError(InkstandError):
    status = 400
    tpe = "BadRequest"
    key = "fail.badRequest.invalidParameters"
    should_retry = False


class ContextLengthError(BadRequestError):
    key = "fail.badRequest.contextLengthExceeded"


class UnsupportedFeatureError(BadRequestError):
    key = "fail.badRequest.unsupportedFeature"


class ModelNotFoundError(BadRequestError):
    key = "fail.badRequest.modelNotFound"


class AuthenticationError(InkstandError):
    status = 401
    tpe = "Unauthorized"
    key = "fail.unauthorized.badToken"
    should_retry = False


class PermissionError_(InkstandError):  # noqa: N801 - avoids shadowing the builtin
    status = 403
    tpe = "Forbidden"
    key = "fail.forbidden.insufficientAccessRights"
    should_retry = False


class NotFoundError(InkstandError):
    status = 404
    tpe = "NotFound"
    key = "fail.notFound.resource"
    should_retry = False


class MethodNotAllowedError(InkstandError):
    status = 405
    tpe = "MethodNotAllowed"
    key = "fail.methodNotAllowed"
    should_retry = False


class RequestTimeoutError(InkstandError):
    """The request head did not arrive whole in time; a client that was only slow may retry."""

    status = 408
    tpe = "RequestTimeout"
    key = "fail.requestTimeout"
    should_retry = True


class PayloadTooLargeError(InkstandError):
    status = 413
    tpe = "PayloadTooLarge"
    key = "fail.payloadTooLarge"
    should_retry = False


class RequestLineTooLongError(InkstandError):
    status = 414
    tpe = "URITooLong"
    key = "fail.uriTooLong"
    should_retry = False


class HeadersTooLargeError(InkstandError):
    status = 431
    tpe = "RequestHeaderFieldsTooLarge"
    key = "fail.requestHeaderFieldsTooLarge"
    should_retry = False


class RateLimitError(InkstandError):
    status = 429
    tpe = "TooManyRequests"
    key = "fail.tooManyRequests.quotaExceeded"

    def __init__(self, description: str, *, retry_after: float, extras: dict | None = None):
        super().__init__(description, extras=extras)
        self.retry_after = retry_after


class RequestOverLimitError(RateLimitError):
    """A request that could never pass its key's limit, however long the client waits."""

    should_retry = False

    def __init__(self, description: str, *, extras: dict | None = None):
        super().__init__(description, retry_after=0, extras=extras)
        self.retry_after = None


class EngineError(InkstandError):
    status = 500
    tpe = "InternalServerError"
    key = "fail.internalServerError.generic"


class ChatTemplateError(EngineError):
    """The model's chat template does not compile or render: the same request fails again."""

    should_retry = False


class BlobMissingError(InkstandError):
    """A file's row stands but its bytes are gone from the data dir: asking again won't help."""

    should_retry = False


class OverloadedError(InkstandError):
    status = 503
    tpe = "ServiceUnavailable"
    key = "fail.serviceUnavailable.temporary"

    def __init__(self, description: str, *, retry_after: float = 1.0, extras: dict | None = None):
        super().__init__(description, extras=extras)
        self.retry_after = retry_after


class ModelFailedError(OverloadedError):
    """The model failed to load; only its operator can fix that, so clients must not retry."""

    should_retry = False

    def __init__(self, description: str, *, extras: dict | None = None):
        super().__init__(description, extras=extras)
        self.retry_after = None


class InsufficientStorageError(InkstandError):
    """Storing an upload would pass `max_storage_bytes`; only deleting files makes room, so
    clients must not retry (the SDK retries every 5xx otherwise)."""

    status = 507
    tpe = "InsufficientStorage"
    key = "fail.insufficientStorage"
    should_retry = False
