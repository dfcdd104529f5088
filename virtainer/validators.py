"""The rules every entry layer shares: names, yes/no flags, passwords.

One home for each rule: the spec's settings, the controller's and the OCI runtime's
environment, the REST API's models and the cloud-init seed all call these. Standard library
only, so any layer (and the lazily loaded API) may import it.
"""

from __future__ import annotations

import re

from virtainer.errors import ConfigError


class Invalid(ValueError):
    """Raised by a field parser; its text says what is accepted."""


# A VM's or a snapshot's name. Used with fullmatch only: `$` also matches before a trailing
# newline ("vm\n"); NAME_PATTERN is the anchored form for JSON schemas (pydantic, OpenAPI).
NAME_TEXT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
NAME_PATTERN = f"^{NAME_TEXT}$"
NAME_MAX_LENGTH = 63
NAME_RULE = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
_NAME = re.compile(NAME_TEXT)


def is_name(text: str) -> bool:
    return _NAME.fullmatch(text) is not None


def parse_name(value: object) -> str:
    text = str(value)
    if not is_name(text):
        raise Invalid(NAME_RULE)
    return text


YES = ("1", "true", "yes", "on")
NO = ("0", "false", "no", "off")
FLAG_RULE = "1/true/yes/on or 0/false/no/off"


def parse_flag(value: object) -> bool:
    text = str(value).strip().lower()
    if text in YES:
        return True
    if text in NO:
        return False
    raise Invalid(FLAG_RULE)


def flag_setting(name: str, value: str) -> bool:
    """An environment variable that is a flag: a bad value is one line naming it."""
    try:
        return parse_flag(value)
    except Invalid:
        raise ConfigError(name, value, FLAG_RULE) from None


# The default user's password, in the cloud-init seed or set later through the guest agent:
# printable (a control character would break the cloud-config and forge log lines) and long
# enough to be worth having.
PASSWORD_MIN, PASSWORD_MAX = 8, 128
PASSWORD_RULE = f"{PASSWORD_MIN} to {PASSWORD_MAX} printable characters on one line"


def parse_password(value: object) -> str:
    text = str(value)
    if not PASSWORD_MIN <= len(text) <= PASSWORD_MAX or not text.isprintable():
        raise Invalid(PASSWORD_RULE)
    return text


def check_password(password: object) -> str:
    """A password given to the seed or the guest agent: a bad one is named, never shown."""
    if not isinstance(password, str):
        raise ConfigError("password", "<hidden>", PASSWORD_RULE)
    try:
        return parse_password(password)
    except Invalid:
        raise ConfigError("password", "<hidden>", PASSWORD_RULE) from None
