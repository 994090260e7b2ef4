"""One error tree, rendered by one handler as ``{"error": <stable code>, "detail": <human text>}``.

OpdError                     500 internal (never raised on purpose)
├── BadRequest               400 bad_request
│   └── Unprocessable        422 invalid_body
├── Unauthorized             401 unauthorized
├── Forbidden                403 forbidden
├── NotFound                 404 not_found
├── Conflict                 409 conflict
├── PayloadTooLarge          413 payload_too_large
├── TooManyRequests          429 rate_limited
└── Unavailable              503 unavailable   (Redis or SQL down: retry later)
"""

from __future__ import annotations

from typing import Any, ClassVar


class OpdError(Exception):
    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, detail: str = "", *, code: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code  # type: ignore[misc]
        self.extra = extra or {}


class BadRequest(OpdError):
    status_code = 400
    code = "bad_request"


class Unprocessable(BadRequest):
    status_code = 422
    code = "invalid_body"


class Unauthorized(OpdError):
    status_code = 401
    code = "unauthorized"


class Forbidden(OpdError):
    status_code = 403
    code = "forbidden"


class NotFound(OpdError):
    status_code = 404
    code = "not_found"


class Conflict(OpdError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(OpdError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequests(OpdError):
    status_code = 429
    code = "rate_limited"


class Unavailable(OpdError):
    status_code = 503
    code = "unavailable"
