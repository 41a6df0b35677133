"""Payout channels: how a settlement reaches the player. Chosen by REFERRAL_PAYOUT_CHANNEL.

A channel receives one `Payout` per settlement (one player's items of one batch) and returns a
reference, or raises. It is called OUTSIDE any database transaction, after the settlement and its
item links committed in state `sending` (see referrals.services.settlement), and its answer is
recorded in a second transaction. What it raises decides what happens to the items:

- `PayoutError`: the payout was certainly NOT made (refused, or the request never left). The
  settlement becomes `failed`, its items are released to pending, the player backs off; a later
  run puts them in a new settlement under a new key.
- `PayoutOutcomeUnknown`, or any other exception: it may have been made. The settlement stays
  `sending` with the error noted, the player backs off, and the next run re-sends the SAME
  settlement with the SAME key. Its items are never offered under another key meanwhile.

The idempotency key is derived from the settlement's id (`payout_key`), so every attempt of one
settlement — after a timeout, a crash between paying and recording, a redelivered job — carries
the same key and the same items; a service that deduplicates by key pays it once.

- `WalletPayout` (default) pays into the player's in-app wallet, which is a ledger account: the
  settlement's ledger transaction credits it when the outcome is recorded. Nothing leaves the
  database, so it is exactly once.
- `WebhookPayout` asks an external payout service over HTTPS to send the money to the player's
  wallet address. Every request carries the `Idempotency-Key` header (the settlement's key) and
  the stable item keys ("reward:17", "credit:3"). Requests are signed (HMAC-SHA256 of the body)
  when REFERRAL_PAYOUT_WEBHOOK_SECRET is set. An HTTP 4xx answer (but 409), 501 or 503, a refused
  connection or an unknown host is a refusal; a timeout, a reset connection, any other 5xx, 409
  or a 2xx answer without a reference is an unknown outcome.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from django.utils.module_loading import import_string

from referrals import conf


class PayoutError(Exception):
    """The channel certainly did not pay; the message is recorded on the failed settlement."""


class PayoutOutcomeUnknown(Exception):
    """The channel may have paid (e.g. no answer in time); retried later with the same key."""


@dataclass(frozen=True)
class Payout:
    key: str  # idempotency key: one per settlement, the same on every attempt
    player_id: int
    wallet_address: str
    amount: Decimal
    items: tuple[str, ...]  # "reward:<id>" / "credit:<id>", sorted


class PayoutChannel(Protocol):
    # True when the money leaves the platform (the wallet is credited and debited again in the
    # same ledger transaction, towards `payout_external`).
    leaves_platform: bool

    def pay(self, payout: Payout, *, now: dt.datetime) -> str:
        """Pay or raise (see the module's docstring); returns the channel's reference.

        Called outside any database transaction; may be called again with the same payout."""
        ...


def payout_key(settlement_id: int) -> str:
    """The idempotency key of settlement `settlement_id`: every attempt sends this one."""
    return f"settlement-{settlement_id}"


class WalletPayout:
    """The in-app wallet: the ledger credit written with the settlement is the payment."""

    leaves_platform = False

    def pay(self, payout: Payout, *, now: dt.datetime) -> str:
        return f"wallet:{payout.player_id}:{payout.key}"


class WebhookPayout:
    """POST the payout as JSON to REFERRAL_PAYOUT_WEBHOOK_URL; 2xx with {"reference"} is paid."""

    leaves_platform = True

    def __init__(
        self, *, url: str | None = None, secret: str | None = None, timeout: int | None = None
    ) -> None:
        settings = conf.load()
        self.url = url if url is not None else settings.webhook_url
        self.secret = secret if secret is not None else settings.webhook_secret
        self.timeout = timeout if timeout is not None else settings.webhook_timeout_seconds
        if not self.url.startswith(("https://", "http://")):
            raise PayoutError(f"REFERRAL_PAYOUT_WEBHOOK_URL={self.url!r} is not an http(s) URL")

    def pay(self, payout: Payout, *, now: dt.datetime) -> str:
        if not payout.wallet_address:
            raise PayoutError(f"player {payout.player_id} has no wallet address")
        body = json.dumps(
            {
                "idempotency_key": payout.key,
                "player_id": payout.player_id,
                "wallet_address": payout.wallet_address,
                "amount": str(payout.amount),
                "items": list(payout.items),
                "requested_at": now.isoformat(),
            }
        ).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": payout.key}
        if self.secret:
            digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Signature-SHA256"] = digest
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310 -- scheme checked above
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                answer = response.read(64 * 1024)
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode(errors="replace")
            message = f"payout service answered HTTP {exc.code}: {detail}"
            if (400 <= exc.code < 500 and exc.code != 409) or exc.code in (501, 503):
                raise PayoutError(message) from None
            raise PayoutOutcomeUnknown(message) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (ConnectionRefusedError, socket.gaierror)):
                raise PayoutError(f"payout service unreachable: {exc}") from None
            raise PayoutOutcomeUnknown(f"payout service did not answer: {exc}") from None
        except OSError as exc:  # TimeoutError, ConnectionResetError, ... while reading
            raise PayoutOutcomeUnknown(f"payout service did not answer: {exc!r}") from None
        try:
            reference = json.loads(answer)["reference"]
        except (ValueError, KeyError, TypeError):
            raise PayoutOutcomeUnknown(
                f"payout service answer has no reference: {answer[:200]!r}"
            ) from None
        return str(reference)[:200]


def payout_channel() -> PayoutChannel:
    """The configured channel, built fresh (settings are read at each use)."""
    return import_string(conf.load().payout_channel)()
