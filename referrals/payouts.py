"""Payout channels: how a settlement reaches the player. Chosen by REFERRAL_PAYOUT_CHANNEL.

A channel receives one `Payout` per player and settlement batch, inside the batch transaction,
and returns a reference or raises. Raising leaves that player's items pending with the error on a
failed `Settlement` row; the other players of the batch are paid regardless.

- `WalletPayout` (default) pays into the player's in-app wallet, which is a ledger account: the
  settlement's ledger transaction credits it in the same database transaction that links and
  settles the items. Nothing leaves the database, so it is exactly once.
- `WebhookPayout` asks an external payout service over HTTPS to send the money to the player's
  wallet address. It is inside the batch transaction, so if the worker dies after the service
  accepted and before COMMIT, the items are still pending and the next run sends them again:
  the service must deduplicate. It can, because every request carries the `Idempotency-Key`
  (derived from the item set) and the stable item keys ("reward:17", "credit:3"); a service that
  refuses an item key it has already paid makes this exactly once end to end. Requests are
  signed (HMAC-SHA256 of the body) when REFERRAL_PAYOUT_WEBHOOK_SECRET is set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from django.utils.module_loading import import_string

from referrals import conf


class PayoutError(Exception):
    """The channel did not pay; the message is recorded on the failed settlement."""


@dataclass(frozen=True)
class Payout:
    key: str  # idempotency key: the same items give the same key
    player_id: int
    wallet_address: str
    amount: Decimal
    items: tuple[str, ...]  # "reward:<id>" / "credit:<id>", sorted


class PayoutChannel(Protocol):
    # True when the money leaves the platform (the wallet is credited and debited again in the
    # same ledger transaction, towards `payout_external`).
    leaves_platform: bool

    def pay(self, payout: Payout, *, now: dt.datetime) -> str:
        """Pay or raise; returns the channel's reference. Must not commit or roll back."""
        ...


def payout_key(items: tuple[str, ...]) -> str:
    return "stl-" + hashlib.sha256(",".join(items).encode()).hexdigest()[:40]


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
            raise PayoutError(f"payout service answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise PayoutError(f"payout service unreachable: {exc}") from None
        try:
            reference = json.loads(answer)["reference"]
        except (ValueError, KeyError, TypeError):
            raise PayoutError(f"payout service answer has no reference: {answer[:200]!r}") from None
        return str(reference)[:200]


def payout_channel() -> PayoutChannel:
    """The configured channel, built fresh (settings are read at each use)."""
    return import_string(conf.load().payout_channel)()
