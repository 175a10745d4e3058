"""Static files next to the API: what the gateway serves, with which headers, and what it never
serves. Requests go over a raw socket, so that no client normalizes the paths first.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from local.stack import LocalStack
from local.static import CONTENT_SECURITY_POLICY
from tests.local.conftest import write_echo_project

pytestmark = pytest.mark.api

# A route whose path looks like a static file, to show that API routes win.
SHADOWING_ROUTE = """\
        Shadowed:
          Type: HttpApi
          Properties: { ApiId: !Ref EchoApi, Path: /shadowed.js, Method: GET }
"""

FILES = {
    "index.html": b"<!doctype html><title>index</title>",
    "app.js": b"console.log('app');",
    "app.css": b"body { margin: 0; }",
    "logo.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>',
    "notes.txt": b"not served",
    "shadowed.js": b"the route answers instead",
    ".hidden.js": b"not served",
}
OUTSIDE_FILE = b"outside the static directory"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("static-site")
    template = write_echo_project(root / "project", SHADOWING_ROUTE)
    web = root / "web"
    web.mkdir()
    for name, content in FILES.items():
        (web / name).write_bytes(content)
    (web / "sub").mkdir()
    (web / "sub" / "inner.js").write_bytes(b"not served")
    (root / "pyproject.toml").write_bytes(OUTSIDE_FILE)
    (root / "outside.js").write_bytes(OUTSIDE_FILE)
    (web / "link.js").symlink_to(root / "outside.js")

    with LocalStack(template, name_prefix="mfa-test-static", web_directory=web) as stack:
        yield stack


def _send(stack: LocalStack, method: str, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    address = urlsplit(stack.api_url)
    assert address.hostname is not None
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("path", "name", "content_type"),
    [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/index.html", "index.html", "text/html; charset=utf-8"),
        ("/index.html?next=1", "index.html", "text/html; charset=utf-8"),
        ("/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "app.css", "text/css; charset=utf-8"),
        ("/logo.svg", "logo.svg", "image/svg+xml"),
    ],
)
def test_file_served(site: LocalStack, path: str, name: str, content_type: str) -> None:
    status, headers, body = _send(site, "GET", path)

    assert status == 200
    assert body == FILES[name]
    assert headers["Content-Type"] == content_type
    assert headers["Content-Length"] == str(len(FILES[name]))


def test_security_headers(site: LocalStack) -> None:
    _, headers, _ = _send(site, "GET", "/")

    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    directives = {part.split()[0]: part.split()[1:] for part in CONTENT_SECURITY_POLICY.split("; ")}
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'"]
    assert directives["img-src"] == ["'self'", "data:", "blob:"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["form-action"] == ["'none'"]


def test_head_has_no_body(site: LocalStack) -> None:
    status, headers, body = _send(site, "HEAD", "/app.js")

    assert status == 200
    assert body == b""
    assert headers["Content-Length"] == str(len(FILES["app.js"]))
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"


@pytest.mark.parametrize(
    "path",
    [
        "/../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/%2E%2E%2Fpyproject.toml",
        "/..%2fpyproject.toml",
        "/..%5cpyproject.toml",
        "/..\\pyproject.toml",
        "/./index.html",
        "/index.html/",
        "/%69ndex.html",
        "/index.html%00.js",
        "/sub/inner.js",
        "/sub%2finner.js",
        "/sub",
        "/.hidden.js",
        "/link.js",
        "/outside.js",
        "/notes.txt",
        "/INDEX.HTML",
        "/missing.js",
    ],
)
def test_path_not_served(site: LocalStack, path: str) -> None:
    status, headers, body = _send(site, "GET", path)

    assert status == 404
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(body)["code"] == "route_not_found"
    assert OUTSIDE_FILE not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_only_get_and_head(site: LocalStack, method: str) -> None:
    status, _, body = _send(site, method, "/index.html")

    assert status == 404
    assert json.loads(body)["code"] == "route_not_found"


def test_api_route_wins(site: LocalStack) -> None:
    status, headers, body = _send(site, "GET", "/shadowed.js")

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["event"]["routeKey"] == "GET /shadowed.js"


def test_api_routes_unchanged(site: LocalStack) -> None:
    echo_status, _, echo_body = _send(site, "GET", "/echo")
    wrong_method_status, wrong_method_headers, _ = _send(site, "DELETE", "/echo")

    assert echo_status == 200
    assert json.loads(echo_body)["event"]["routeKey"] == "GET /echo"
    assert wrong_method_status == 405
    assert wrong_method_headers["Allow"] == "GET, POST"


def test_static_files_off(echo_template: Path) -> None:
    with LocalStack(echo_template, name_prefix="mfa-test-no-web", web_directory=None) as stack:
        status, _, body = _send(stack, "GET", "/")

    assert status == 404
    assert json.loads(body)["code"] == "route_not_found"


def test_missing_directory_rejected(echo_template: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing"

    with pytest.raises(NotADirectoryError, match="static directory not found"):
        LocalStack(echo_template, name_prefix="mfa-test-bad-web", web_directory=missing).start()
