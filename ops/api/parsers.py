"""JSON bodies with a size cap: DRF streams the body to its parser, bypassing Django's
DATA_UPLOAD_MAX_MEMORY_SIZE check, so the cap is applied here while reading."""

from __future__ import annotations

import json
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from ops.api.exceptions import PayloadTooLarge


class BoundedJSONParser(JSONParser):
    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: dict[str, Any] | None = None,
    ) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(limit)
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError({"body": [f"malformed JSON: {exc}"]}) from None
        except RecursionError:
            # `[[[[...` 100k deep: Python's parser gives up with RecursionError, not ValueError.
            raise ParseError({"body": ["JSON nested too deeply"]}) from None


def _refuse_constant(name: str) -> None:
    # NaN and Infinity are not JSON; Python's parser would accept them.
    raise ValueError(f"{name} is not valid JSON")
