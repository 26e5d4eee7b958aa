"""A small WSGI toolkit for the local build pages (review and annotate): standard library plus jinja2.

``Router`` maps (method, path regex) to handlers that take a :class:`Request` and return a
:class:`Response` or raise :class:`HTTPError`. Pages are jinja2 templates from ``ui/templates``
(autoescaped); scripts and styles are served from ``ui/static``, never from a CDN, and the
Content-Security-Policy allows only this origin. A state-changing request (not GET) that the
browser marks as sent from another site (``Sec-Fetch-Site``) is refused (403: CSRF); a request
body over ``MAX_BODY``, with an invalid Content-Length or with invalid JSON is refused (413, 400);
an unexpected error answers 500 without details (the traceback goes to the server's stderr).
A connection that goes ``connection_timeout_s`` (default :data:`DEFAULT_CONNECTION_TIMEOUT_S`) without sending
a byte while the server waits for its request line, headers or body, or that has not sent them all
:data:`REQUEST_DEADLINE_FACTOR` times that long after it opened (a client dripping a byte now and then), is
closed (a body cut short answers 408), so a client that opens a socket and sends nothing, half a request, or
its request a byte at a time, holds its handler thread no longer. The same timeout bounds each write of the
answer to a client that stops reading.
Cookies are ``Secure`` when the request came over HTTPS: the server's own scheme, or, only for a
``Router(behind_proxy=True)``, the ``X-Forwarded-Proto: https`` its reverse proxy sets (never on plain
HTTP, where browsers would drop a Secure cookie of a non-localhost site and sign-in would fail).
``serve`` runs a threaded server on localhost.
"""

from __future__ import annotations

import io
import json
import mimetypes
import re
import socket
import socketserver
import sys
import time
import traceback
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import SimpleCookie
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

MAX_BODY = 64 * 1024
DEFAULT_CONNECTION_TIMEOUT_S = 30.0  # the longest a connection may wait, silent, for the request's next bytes
REQUEST_DEADLINE_FACTOR = 2  # the whole request (line, headers, body) must arrive within this many connection timeouts
LOOPBACK_HOST = re.compile(r"(?:localhost|127\.\d+\.\d+\.\d+|\[::1\])(?::\d+)?", re.IGNORECASE)
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
                                "frame-ancestors 'none'; form-action 'self'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]


class HTTPError(Exception):
    """An error answer: JSON ``{"error": message}`` for API paths, a short page otherwise."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    cookies: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # named groups of the matched route
    secure: bool = False  # sent over HTTPS (to this server, or to the trusted proxy in front)

    @classmethod
    def from_environ(cls, environ: dict[str, Any], behind_proxy: bool = False) -> "Request":
        """The request; with ``behind_proxy`` the last ``X-Forwarded-Proto`` value (the one the
        proxy in front set) tells whether it came over HTTPS."""
        declared = environ.get("CONTENT_LENGTH") or "0"
        if not re.fullmatch(r"[0-9]+", declared):  # a negative length would read to the end of the stream, past MAX_BODY
            raise HTTPError(400, f"invalid Content-Length {declared!r}")
        length = int(declared)
        if length > MAX_BODY:
            raise HTTPError(413, "request body too large")
        try:
            body = environ["wsgi.input"].read(length) if length else b""
        except TimeoutError:  # the connection's read timeout (see make_local_server)
            raise HTTPError(408, "the request body did not arrive in time") from None
        cookie = SimpleCookie()
        cookie.load(environ.get("HTTP_COOKIE", ""))
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        forwarded = headers.get("x-forwarded-proto", "").rpartition(",")[2].strip().lower()
        secure = environ.get("wsgi.url_scheme") == "https" or (behind_proxy and forwarded == "https")
        return cls(method=environ["REQUEST_METHOD"], path=environ.get("PATH_INFO", "/") or "/",
                   query={k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()},
                   headers=headers, cookies={k: m.value for k, m in cookie.items()},
                   body=body, secure=secure)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8", "replace")).items()}

    def json(self) -> Any:
        if not self.headers.get("content-type", "").startswith("application/json"):
            raise HTTPError(415, "send the request as application/json")
        try:
            return json.loads(self.body or b"null")
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
            raise HTTPError(400, f"the request body is not valid JSON: {exc}") from exc


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def set_cookie(self, name: str, value: str, max_age: Optional[int] = None, secure: bool = False) -> "Response":
        """Add a Set-Cookie header (HttpOnly, SameSite=Strict; ``secure``: Secure, for a request over HTTPS)."""
        attrs = f"{name}={value}; Path=/; HttpOnly; SameSite=Strict"
        if max_age is not None:
            attrs += f"; Max-Age={max_age}"
        if secure:
            attrs += "; Secure"
        self.headers.append(("Set-Cookie", attrs))
        return self


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data).encode(), status, "application/json")


def redirect(location: str) -> Response:
    return Response(b"", 303, headers=[("Location", location)])


def file_response(path: Path, download_name: Optional[str] = None) -> Response:
    if not path.is_file():
        raise HTTPError(404, "file not found")
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = [("Content-Disposition", f'attachment; filename="{download_name}"')] if download_name else []
    return Response(path.read_bytes(), 200, kind, headers)


class Templates:
    """jinja2 templates from ``pigbench/build/ui/templates``, autoescaped."""

    def __init__(self) -> None:
        import jinja2

        self.env = jinja2.Environment(loader=jinja2.PackageLoader("pigbench.build", "ui/templates"),
                                      autoescape=True, undefined=jinja2.StrictUndefined)

    def render(self, name: str, status: int = 200, **context: Any) -> Response:
        return Response(self.env.get_template(name).render(**context).encode("utf-8"), status)


Handler = Callable[[Request], Response]


class Router:
    """A WSGI application dispatching on (method, path regex); serves ``/static/<name>`` itself.
    With ``local_only`` it answers only requests whose Host is a loopback name (``LOOPBACK_HOST``), so
    that a web page whose domain is rebound to 127.0.0.1 (DNS rebinding) cannot use a page without sign-in.
    With ``behind_proxy`` it trusts ``X-Forwarded-Proto`` (:attr:`Request.secure`): only behind a reverse
    proxy that sets it, since a client can send any header."""

    def __init__(self, local_only: bool = False, behind_proxy: bool = False) -> None:
        self.local_only = local_only
        self.behind_proxy = behind_proxy
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.static = resources.files("pigbench.build") / "ui" / "static"

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append((method, re.compile(pattern + r"\Z"), handler))
            return handler
        return register

    def dispatch(self, request: Request) -> Response:
        if self.local_only and not LOOPBACK_HOST.fullmatch(request.headers.get("host", "")):
            raise HTTPError(403, "this page answers only at localhost or 127.0.0.1")
        if request.method not in ("GET", "HEAD") and request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            raise HTTPError(403, "a request from another site is refused")  # CSRF: forms and scripts of other sites
        static = re.fullmatch(r"/static/([a-z0-9_-]+\.(?:js|css))", request.path)
        if static and request.method == "GET":
            item = self.static / static.group(1)
            if not item.is_file():
                raise HTTPError(404, "no such file")
            kind = "text/javascript" if item.name.endswith(".js") else "text/css"
            return Response(item.read_bytes(), 200, f"{kind}; charset=utf-8")
        allowed = False
        for method, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if match:
                allowed = True
                if method == request.method:
                    request.params = match.groupdict()
                    return handler(request)
        raise HTTPError(405 if allowed else 404, "method not allowed" if allowed else "not found")

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        try:
            request = Request.from_environ(environ, self.behind_proxy)
            response = self.dispatch(request)
        except Exception as exc:  # noqa: BLE001 - one failing request never takes the server down
            if not isinstance(exc, HTTPError):  # the traceback goes to the server's log, never to the client
                traceback.print_exc(file=sys.stderr)
                exc = HTTPError(500, "internal error: the request was not completed")
            api = environ.get("PATH_INFO", "").startswith(("/api/", "/admin/api/"))
            response = (json_response({"error": exc.message}, exc.status) if api else
                        Response(_error_page(exc.status, exc.message), exc.status))
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
                   ("Cache-Control", "no-store"), *SECURITY_HEADERS, *response.headers]
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        return [response.body]


def _error_page(status: int, message: str) -> bytes:
    from html import escape

    return (f"<!doctype html><meta charset=utf-8><title>{status}</title><link rel=stylesheet href=/static/style.css>"
            f"<main class=narrow><h1>{status} {HTTPStatus(status).phrase}</h1><p class=error>{escape(message)}</p>"
            f"<p><a href=/>Back</a></p></main>").encode("utf-8")


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    connection_timeout_s: float = DEFAULT_CONNECTION_TIMEOUT_S  # each handler's socket timeout


class _DeadlineReader(socket.SocketIO):
    """The reading end of a connection: each read waits at most ``timeout`` seconds, and none ends
    later than ``deadline_s`` seconds after this reader was made; either raises :class:`TimeoutError`
    saying which. The socket's timeout is ``timeout`` again after each read (writes use it too)."""

    def __init__(self, sock: socket.socket, timeout: float, deadline_s: float) -> None:
        super().__init__(sock, "rb")
        self.timeout, self.deadline_s = timeout, deadline_s
        self.deadline = time.monotonic() + deadline_s

    def readinto(self, buffer: Any) -> Optional[int]:
        remaining = self.deadline - time.monotonic()
        late = f"the request was still arriving {self.deadline_s:g} s after the connection opened"
        if remaining <= 0:
            raise TimeoutError(late)
        self._sock.settimeout(min(self.timeout, remaining))
        try:
            return super().readinto(buffer)
        except TimeoutError:
            raise TimeoutError(late if remaining < self.timeout else
                               f"the request did not arrive within {self.timeout:g} s") from None
        finally:
            self._sock.settimeout(self.timeout)


class _QuietHandler(WSGIRequestHandler):
    """Logs only errors, and closes a connection silent for the server's ``connection_timeout_s`` or
    still sending its request :data:`REQUEST_DEADLINE_FACTOR` times that long after it opened."""

    def setup(self) -> None:
        self.timeout = self.server.connection_timeout_s  # type: ignore[attr-defined]  # StreamRequestHandler applies it
        super().setup()
        self.rfile.close()  # the plain reader StreamRequestHandler made
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self.timeout, REQUEST_DEADLINE_FACTOR * self.timeout))

    def handle(self) -> None:
        try:
            super().handle()
        except TimeoutError as exc:  # the request line or headers did not come in time (_DeadlineReader); the server closes the socket
            sys.stderr.write(f"{self.address_string()} closed: {exc}\n")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        if args and str(args[1]).startswith(("4", "5")):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def make_local_server(app: Callable, host: str = "127.0.0.1", port: int = 0,
                      connection_timeout_s: float = DEFAULT_CONNECTION_TIMEOUT_S) -> WSGIServer:
    """A threaded server for ``app``; port 0 picks a free port (see ``server.server_port``). A connection that
    sends nothing for ``connection_timeout_s`` seconds while its request is awaited, or that is still sending
    it :data:`REQUEST_DEADLINE_FACTOR` times that long after it opened, is closed."""
    if not connection_timeout_s > 0:
        raise ValueError(f"--connection-timeout (the per-connection read timeout) must be positive, got {connection_timeout_s:g}")
    server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    server.connection_timeout_s = connection_timeout_s  # type: ignore[attr-defined]
    return server


def serve(app: Callable, host: str, port: int, what: str,
          connection_timeout_s: float = DEFAULT_CONNECTION_TIMEOUT_S) -> None:
    """Serve until interrupted, printing the address (see :func:`make_local_server`)."""
    server = make_local_server(app, host, port, connection_timeout_s)
    print(f"{what} at http://{host}:{server.server_port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
