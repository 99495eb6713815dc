"""The one error body of every HTTP refusal and failure: `{"detail": ..., "code": ...}`.

`code` is a `rag.errors.ErrorCode` and the status its `ERROR_TABLE` row, whether the refusal
comes from the app-wide guards (`api.middleware`: Host, API key, rate limit, body/URL/JSON
caps), a route (`RepoLensError`), FastAPI's validation (422) or Starlette's own `HTTPException`
(an unknown route, a wrong method). The OpenAI-compatible `/v1` keeps OpenAI's error shape
(`{"error": {..., "code"}}`), which its clients parse.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

from rag.errors import ErrorCode, http_status

# Starlette's own HTTPExceptions (no RepoLensError behind them) by status.
_CODES_BY_STATUS = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    414: ErrorCode.URL_TOO_LONG,
    429: ErrorCode.RATE_LIMITED,
}


def error_body(code: str, detail: object) -> dict[str, object]:
    return {"detail": detail, "code": str(code)}


def error_response(
    code: str, detail: object, *, status: int | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """`error_body` with the code's status from `rag.errors.ERROR_TABLE` (unless `status` is given)."""
    return JSONResponse(error_body(code, detail), status_code=status or http_status(code), headers=headers)


def code_for_status(status: int) -> ErrorCode:
    """The code of a bare HTTP status (Starlette's own 404/405...): `bad_request` for another 4xx,
    `internal` for a 5xx."""
    return _CODES_BY_STATUS.get(status, ErrorCode.BAD_REQUEST if status < 500 else ErrorCode.INTERNAL)
