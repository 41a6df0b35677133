"""Flower's configuration, read from the working directory by `celery -A jobsite flower`.

Flower shows task arguments and results and can revoke tasks, so it never starts open: it needs
FLOWER_BASIC_AUTH=user:password (development, compose) or FLOWER_AUTH with an OAuth provider
(FLOWER_AUTH_PROVIDER, FLOWER_OAUTH2_KEY, FLOWER_OAUTH2_SECRET, FLOWER_OAUTH2_REDIRECT_URI) in
production; credentials come from the environment, never the command line, where `ps` shows them.
It listens on the loopback interface unless FLOWER_ADDRESS or --address says otherwise.
"""

import os
import sys

if not (os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH")):
    sys.exit(
        "flower: refusing to start without authentication: set FLOWER_BASIC_AUTH=user:password, "
        "or FLOWER_AUTH and FLOWER_AUTH_PROVIDER for OAuth (docs/operations.md)"
    )

address = os.environ.get("FLOWER_ADDRESS", "127.0.0.1")
