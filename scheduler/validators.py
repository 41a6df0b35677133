"""Input rules of schedule writes, each in one place: the offset's range, the cron, the queue and
the priority. The model field, the admin form, the API serializers, the services and the settings
(`JOB_STAGGER_<JOB>`) all use these, so they refuse the same values with the same words.

Imports nothing of ours at load that touches the database: settings.py reads the offset range.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

OFFSET_MIN = 0
OFFSET_MAX = 59
OFFSET_ERROR = "The offset must be a whole number of seconds between 0 and 59."


class WriteRefused(ValueError):
    """Input refused before anything was written; `field` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def is_offset(value: object) -> bool:
    """A second offset: a whole number 0..59 (`True` is an int in Python, not an offset)."""
    return (
        not isinstance(value, bool) and isinstance(value, int) and OFFSET_MIN <= value <= OFFSET_MAX
    )


def validate_offset(value: object) -> None:
    """Django validator (model field, forms, DRF serializers): one message for 60, -1 and "abc"."""
    if not is_offset(value):
        raise ValidationError(OFFSET_ERROR, code="offset_range")


def check_offset(value: object) -> int:
    """The services' form of `validate_offset`: the offset, or `WriteRefused` naming the field."""
    if not is_offset(value):
        raise WriteRefused("offset", OFFSET_ERROR)
    return value  # type: ignore[return-value]
