"""The CLI's plain lines are what rich prints off a terminal, byte for byte (virtainer/cli_output.py)."""

from __future__ import annotations

import io
import random
import string
import sys
from collections.abc import Callable

import pytest
from rich.console import Console
from rich.markup import escape

from virtainer.cli_output import CHECK_MARK, Output, plain_safe

ALPHABET = string.printable + "[]\\/@#" * 8 + CHECK_MARK + "éß漢\u200b\x1b\x07"


def texts(count: int) -> list[str]:
    rng = random.Random(14)
    fixed = [
        "",
        " ",
        "a  ",
        "[dim]x[/dim]",
        "\\",
        "a\\",
        "\\[x]",
        "[/x]",
        "/vms/[x]/d.qcow2",
        "a\tb",
        "52:54:00:cd:01:02",
    ]
    fixed += ["word " * 60, "x" * 300]  # longer than any terminal: rich soft-wraps, never breaks
    return fixed + ["".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 40))) for _ in range(count)]


class FakeStream(io.StringIO):
    encoding = "utf-8"


def rich_writes(markup: str, *, with_markup: bool) -> str:
    sink = io.StringIO()
    console = Console(file=sink, highlight=False, soft_wrap=True, markup=with_markup, emoji=False, _environ={})
    console.print(markup)
    return sink.getvalue()


def check_line(
    monkeypatch: pytest.MonkeyPatch, text: str, styled: Callable[[Callable[[str], str]], str] | None
) -> None:
    """A line written plain is what rich writes (the other lines go through rich itself)."""
    if not plain_safe(text, markup=styled is not None):
        return
    stream = FakeStream()
    monkeypatch.setattr(sys, "stdout", stream)
    output = Output(stderr=False, markup=styled is not None)
    assert output.is_plain
    output.line(text, styled)
    assert stream.getvalue() == rich_writes(styled(escape) if styled else text, with_markup=styled is not None)


@pytest.mark.parametrize("text", texts(400))
def test_a_plain_line_is_what_rich_prints_off_a_terminal(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    elapsed = "   1.5s"
    check_line(monkeypatch, f"{elapsed} {text}", lambda esc: f"[dim]{elapsed}[/dim] {esc(text)}")
    stage = f"{elapsed} {CHECK_MARK} ssh {text}"
    check_line(
        monkeypatch, stage, lambda esc: f"[dim]{elapsed}[/dim] [green]{CHECK_MARK}[/green] ssh [dim]{esc(text)}[/dim]"
    )
    check_line(monkeypatch, text, None)


def test_rich_writes_where_it_would_draw_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", FakeStream())
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert not Output(stderr=False, markup=False).is_plain
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    assert Output(stderr=False, markup=False).is_plain
    latin = FakeStream()
    latin.encoding = "latin-1"  # type: ignore[misc]
    monkeypatch.setattr(sys, "stdout", latin)
    assert not Output(stderr=False, markup=False).is_plain


def test_texts_rich_would_change_are_not_written_plain() -> None:
    for text in ("a\tb", "\x1b[31m", "bell\x07", "wide 漢", "zero\u200bwidth", "two\nlines"):
        assert not plain_safe(text, markup=False)
    assert plain_safe("a\\", markup=False)
    assert not plain_safe("a\\", markup=True)
