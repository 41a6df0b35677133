"""Shared helpers at the bottom of the project: plain Python, not a Django app.

Every package may import `core`; `core` imports nothing of ours (tests/test_layout.py checks it),
so it can never take part in an import cycle.
"""
