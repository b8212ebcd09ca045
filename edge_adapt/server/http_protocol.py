"""uvicorn's own refusals in the API's error form.

A request the HTTP parser cannot read (a malformed or oversized request line, headers too large)
never reaches the app: uvicorn answers it itself, 400 with the plain text "Invalid HTTP request
received.". A client of an OpenAI-style API reads errors as JSON, so the server runs uvicorn's
protocol with that one answer written as the API's error body (same status, same closed
connection). uvicorn logs the refusal at WARNING, once.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

BODY = json.dumps({"error": {
    "message": "the HTTP request could not be read (its request line or headers are malformed or too large); send a "
               "well-formed request with the fields in a JSON body",
    "type": "invalid_request_error", "param": None, "code": "malformed_http_request"}}).encode()


class JSONErrorsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose parser refusals are the API's JSON error."""

    def send_400_response(self, msg: str) -> None:
        content = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: application/json\r\n", b"content-length: " + str(len(BODY)).encode() + b"\r\n",
                        b"connection: close\r\n", b"\r\n", BODY])
        self.transport.write(b"".join(content))
        self.transport.close()
