"""error_text: any exception's text can be stored in a PostgreSQL text column."""

from __future__ import annotations

import datetime as dt

import pytest

from games.models import Notification, Player
from scheduler.errors import error_text


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_error_text_names_the_type_and_cleans_what_postgres_refuses():
    text = error_text(ValueError("bad\x00byte \udc80 here"))
    assert text == "ValueError: bad\ufffdbyte ? here"
    assert error_text(KeyError()) == "KeyError"
    assert error_text(Unprintable()) == "Unprintable: <unprintable error>"


def test_error_text_is_bounded():
    text = error_text(RuntimeError("x" * 10_000), limit=100)
    assert len(text) == 100
    assert text.endswith("…")


@pytest.mark.django_db
def test_cleaned_error_text_is_accepted_by_postgres():
    player = Player.objects.create(handle="p")
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    notification = Notification.objects.create(
        player=player, kind="k", title="t", due_at=when, next_attempt_at=when, created_at=when
    )
    notification.last_error = error_text(ConnectionError("\x00\udc80" * 3000))
    notification.save(update_fields=["last_error"])
    notification.refresh_from_db()
    assert len(notification.last_error) == 2000
