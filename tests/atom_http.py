"""The HTTP reply both local arXiv test servers send (replay and fault injection)."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


def send_atom(handler: BaseHTTPRequestHandler, status: int, body: bytes,
              headers: dict[str, str]) -> None:
    """Send an Atom response; a client that already gave up (timeout tests) is not an error."""
    try:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Type", "application/atom+xml")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass
