"""OpenAI-style errors: ``{"error": {"message", "type", "code", "param"}}`` with the HTTP status
that says whose fault it is. Bad input is always a 4xx that names the field; a 500 only ever
means a bug, and its body carries no traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error answered to the client as it is."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, "invalid_request_error", code, param)


def busy(retry_after_s: int) -> APIError:
    return APIError(503, f"the server is busy: its queue is full; retry in {retry_after_s} s", "server_busy", "busy",
                    headers={"Retry-After": str(retry_after_s)})


# a value of the wrong type for one member of a union ("a string, or a list of parts"): said
# only when no member found anything more specific to say
_TYPE_ONLY = {"string_type", "list_type", "model_type", "dict_type", "int_type", "float_type", "bool_type",
              "literal_error", "model_attributes_type"}


def _field(loc: tuple) -> str:
    """``messages.0.content`` from pydantic's location, without the body and the union members'
    tags (``function-after[...]``, ``list[TextPart]``)."""
    return ".".join(str(part) for part in loc if part != "body" and not (isinstance(part, str) and ("[" in part or part in
                                                                                                     ("str", "int",
                                                                                                      "float", "bool"))))


def first_error(errors: list[dict]) -> dict:
    """The error that says most: a value's own fault before a union member's type mismatch."""
    specific = [e for e in errors if e.get("type") not in _TYPE_ONLY]
    return (specific or errors or [{"loc": (), "msg": "invalid request"}])[0]


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        # a client's mistake or a refusal: one line, no traceback (the client has the whole message)
        log.log(logging.WARNING if exc.status >= 500 else logging.INFO, "%s %s -> %d %s: %.200s", request.method,
                request.url.path, exc.status, exc.code or exc.type, exc.message)
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = first_error(list(exc.errors()))
        field = _field(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            return bad_request(f"the body is not valid JSON: {first.get('msg')}", None, "invalid_json").response()
        if first.get("type") == "missing" and field == "":
            return bad_request("the body is empty: send a JSON object with 'Content-Type: application/json'", None,
                               "invalid_json").response()
        message = f"{field}: {str(first.get('msg')).removeprefix('Value error, ')}" if field else str(first.get("msg"))
        return bad_request(message, field or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(exc.status_code, str(exc.detail), kind, None).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s", request.url.path)
        return APIError(500, "internal error (a bug: the server log has the details)", "server_error", "internal").response()
