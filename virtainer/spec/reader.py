"""Reads one raw setting at a time, turning parser failures into ConfigError.

Typed: `get(key, parse, default)` returns what `parse` returns, so a `VmSpec(...)` built from
what it reads is checked by mypy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from virtainer.errors import ConfigError
from virtainer.spec.settings import SETTINGS_BY_KEY, RawValue
from virtainer.validators import Invalid

T = TypeVar("T")


class Reader:
    """Reads one raw setting at a time, turning parser failures into ConfigError."""

    def __init__(self, raw: Mapping[str, RawValue]) -> None:
        self.raw = raw

    def has(self, key: str) -> bool:
        return key in self.raw

    @overload
    def get(self, key: str, parse: Callable[[Any], T]) -> T | None: ...
    @overload
    def get(self, key: str, parse: Callable[[Any], T], default: T) -> T: ...
    def get(self, key: str, parse: Callable[[Any], T], default: T | None = None) -> T | None:
        """The setting's parsed value, `default` when it is not set."""
        item = self.raw.get(key)
        if item is None:
            return default
        value = self._parse(key, item, parse)
        for other in item.others:  # the same setting under another name: it must agree
            if self._parse(key, other, parse) != value:
                raise self._conflict(key, item, other)
        return value

    def _parse(self, key: str, item: RawValue, parse: Callable[[Any], T]) -> T:
        try:
            if isinstance(item.value, Mapping):
                raise Invalid("a single value, not a mapping")
            return parse(item.value)
        except Invalid as invalid:
            raise ConfigError(item.origin, self._shown(key, item.value), str(invalid)) from None

    def _shown(self, key: str, value: object) -> object:
        return "***" if SETTINGS_BY_KEY[key].secret else value

    def _conflict(self, key: str, item: RawValue, other: RawValue) -> ConfigError:
        shown = self._shown(key, item.value)
        first = f"'{shown}'" if isinstance(shown, str) and shown.isprintable() else repr(shown)
        return ConfigError(
            other.origin, self._shown(key, other.value),
            f"the same setting as {item.origin}={first}, with another value: set one of the two, or both alike",
        )  # fmt: skip

    def origin(self, key: str) -> str:
        """The name the user gave a setting (RAM, --memory), or its key when it is a default."""
        item = self.raw.get(key)
        return item.origin if item is not None else key

    def fail(self, key: str, accepted: str, value: object = None) -> ConfigError:
        """The error for `key`: named as the user wrote it, or by its key when it was a default."""
        item = self.raw.get(key)
        if item is None:
            return ConfigError(key, value, accepted)
        return ConfigError(item.origin, "***" if SETTINGS_BY_KEY[key].secret else item.value, accepted)

    def items(self, key: str, parse: Callable[[Any], T]) -> list[T]:
        item = self.raw.get(key)
        if item is None:
            return []
        parsed = self._items(key, item, parse)
        for other in item.others:
            if self._items(key, other, parse) != parsed:
                raise self._conflict(key, item, other)
        return parsed

    def _items(self, key: str, item: RawValue, parse: Callable[[Any], T]) -> list[T]:
        values = item.value if isinstance(item.value, list) else [item.value]
        if any(isinstance(value, list | Mapping) for value in values):
            raise ConfigError(item.origin, self._shown(key, item.value), "a list of single values")
        return [self._parse(key, RawValue(value, item.origin), parse) for value in values]
