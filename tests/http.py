"""A plain HTTP GET for tests that talk to real servers (the launcher's web, Flower)."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request


def http_status(url: str, auth: tuple[str, str] | None = None) -> int | None:
    """HTTP status of a GET (with basic auth if given), or None while nothing answers."""
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
