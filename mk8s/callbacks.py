"""Callback types shared across mk8s, each with its own name and meaning.

The library prints nothing itself: callers pass these. One name per shape, so a
reader never has to guess which "progress" a parameter means.
"""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]
"""A line of progress text for the operator (``ui.note`` on the command line)."""

BytesSent = Callable[[int], None]
"""Called with the number of bytes just sent: an increment, not a total."""

StreamProgress = Callable[[int, int], None]
"""``(bytes done, bytes in all)`` of one stream: reading or writing a bundle."""

TransferProgress = Callable[[str, int, "int | None"], None]
"""``(name, bytes done, total or None)`` of one of many transfers, from any thread;
``bytes done`` may go back to 0 when a server ignores a resume request."""

PassphrasePrompt = Callable[[str], str]
"""Asked for a passphrase; gets the prompt text, returns the answer."""
