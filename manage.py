#!/usr/bin/env python
"""Django's command-line utility for jobsite."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")
    from django.core.management import execute_from_command_line

    from core.env import ConfigError

    try:
        execute_from_command_line(sys.argv)
    except ConfigError as exc:  # one line naming the variable, not a traceback
        sys.exit(f"configuration error: {exc}")


if __name__ == "__main__":
    main()
