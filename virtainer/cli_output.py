"""The CLI's output streams: rich on a terminal, plain writes when rich would print plain text.

rich and its imports are ~40-70 ms of CPU (Console, Text, styles, markup), a sixth of what `up`
takes to a running domain. Off a terminal rich prints a line of printable ASCII exactly as it is,
so such lines are written directly and rich loads only for what needs it: a terminal (colours,
progress bars), FORCE_COLOR or TTY_COMPATIBLE in the environment, tables, JSON, other text.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console

CHECK_MARK = "✓"  # the one character beyond ASCII our own lines carry, one cell wide in rich
RICH_TERMINAL_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE")  # rich treats any stream as a terminal with these


def plain_safe(text: str, *, markup: bool) -> bool:
    """True if rich would print `text` unchanged off a terminal: no control codes, tabs (rich
    expands them) or characters whose width rich measures; with markup, no backslash (escaped text
    ending in one, or with one before a `[`, does not print as it was)."""
    return text.replace(CHECK_MARK, "").isascii() and text.isprintable() and not (markup and "\\" in text)


class Output:
    """stdout or stderr as the CLI writes to them; the stream is looked up at each write (tests
    replace sys.stdout)."""

    def __init__(self, *, stderr: bool, markup: bool, console: Console | None = None) -> None:
        self._stderr = stderr
        self._markup = markup
        self._console = console  # given: every line goes to it (a test's recording console)

    @property
    def stream(self) -> TextIO:
        return sys.stderr if self._stderr else sys.stdout

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            # emoji=False: rich would print a MAC 52:54:00:cd:.. with a CD emoji for its ':cd:'
            self._console = Console(
                stderr=self._stderr, highlight=False, soft_wrap=True, markup=self._markup, emoji=False
            )
        return self._console

    @property
    def is_plain(self) -> bool:
        """True where rich's Console would not be a terminal and would write UTF-8 text as it is."""
        if self._console is not None or any(name in os.environ for name in RICH_TERMINAL_ENV):
            return False
        stream = self.stream
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        try:
            return encoding == "utf8" and not stream.isatty()
        except ValueError:  # a closed stream: rich's print raises, so does ours
            return False

    def line(self, text: str, styled: Callable[[Callable[[str], str]], str] | None = None) -> None:
        """Print `text` and a newline. `styled`, given rich's markup escape, builds the same line
        with markup for a terminal (only for a console with markup on)."""
        if self.is_plain and plain_safe(text, markup=styled is not None):
            stream = self.stream
            stream.write(text + "\n")
            stream.flush()
            return
        if styled is None:
            self.console.print(text, markup=False)
            return
        from rich.markup import escape

        self.console.print(styled(escape))
