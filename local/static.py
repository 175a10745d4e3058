"""Serve the files of one directory, such as the reference web page, next to the HTTP API."""

from __future__ import annotations

import re
from pathlib import Path

from local.events import HttpResponse

# Only these file types are served; every other name gets the gateway's 404.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# The page loads only its own scripts, styles and API, and shows QR codes from data: or blob: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("Referrer-Policy", "no-referrer"),
)

INDEX_FILE = "index.html"

# A file name directly in the directory: no slash, no percent-encoding, no leading dot.
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class StaticFiles:
    """Files directly inside `directory`, read on every request so that edits show at once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        if not self.directory.is_dir():
            raise NotADirectoryError(f"static directory not found: {directory}")

    def response(self, method: str, raw_path: str) -> HttpResponse | None:
        """Return the response for a GET or HEAD of `raw_path`, or None when no file matches.

        `raw_path` is still percent-encoded. A path with a second slash, a percent sign or a
        dot segment never matches, so no request can name a file outside the directory.
        """
        if method.upper() not in {"GET", "HEAD"}:
            return None
        path = self._file_path(raw_path)
        if path is None:
            return None
        try:
            body = path.read_bytes()
        except OSError:
            return None
        headers = [("Content-Type", CONTENT_TYPES[path.suffix]), *SECURITY_HEADERS]
        return HttpResponse(200, headers, body)

    def _file_path(self, raw_path: str) -> Path | None:
        if not raw_path.startswith("/"):
            return None
        name = raw_path[1:] or INDEX_FILE
        if _FILE_NAME.fullmatch(name) is None:
            return None
        path = self.directory / name
        if path.suffix not in CONTENT_TYPES:
            return None
        # A symbolic link may point anywhere, so only a regular file that really sits in the
        # directory is served.
        if path.is_symlink() or not path.is_file() or path.resolve().parent != self.directory:
            return None
        return path
