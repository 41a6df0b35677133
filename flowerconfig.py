"""Flower's configuration, read from the working directory by `celery -A jobsite flower`.

Flower shows task arguments and results and can revoke tasks, so it never starts open: it needs
FLOWER_BASIC_AUTH=user:password (development, compose) or FLOWER_AUTH with an OAuth provider
(FLOWER_AUTH_PROVIDER, FLOWER_OAUTH2_KEY, FLOWER_OAUTH2_SECRET, FLOWER_OAUTH2_REDIRECT_URI) in
production; credentials come from the environment, never the command line, where `ps` shows them.
It listens on the loopback interface unless FLOWER_ADDRESS or --address says otherwise.

Flower 2.2 answers `/metrics` and `/healthcheck` without credentials, and has no option to close
them; its other pages are `tornado.web.authenticated`. This file is Python that Flower runs at
start-up, so it puts the same decorator on those two handlers: with basic auth they answer 401
without credentials, like every other page (tests/test_flower.py checks it on a real Flower).
Scrape jobsite's own `/metrics` (web) instead; a proxy in front of Flower should still refuse
`/metrics` and `/healthcheck` from outside (docs/security.md) in case a Flower upgrade changes this.
"""

import os
import sys

import tornado.web
from flower.views.monitor import Healthcheck, Metrics

if not (os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH")):
    sys.exit(
        "flower: refusing to start without authentication: set FLOWER_BASIC_AUTH=user:password, "
        "or FLOWER_AUTH and FLOWER_AUTH_PROVIDER for OAuth (docs/operations.md)"
    )

for _handler in (Metrics, Healthcheck):
    if not getattr(_handler.get, "__wrapped__", None):  # once, should the file be read twice
        _handler.get = tornado.web.authenticated(_handler.get)

address = os.environ.get("FLOWER_ADDRESS", "127.0.0.1")
