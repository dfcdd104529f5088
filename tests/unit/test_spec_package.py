"""The spec package's seams: the dialects' names reach the settings table, and each shared rule
(names, yes/no, passwords) has one validator."""

from __future__ import annotations

from types import ModuleType

import pytest

from virtainer import guest, snapshots
from virtainer.api import container as api_container
from virtainer.controller.config import controller_config
from virtainer.errors import ConfigError
from virtainer.spec import SETTINGS, SETTINGS_BY_KEY
from virtainer.spec.dialects import runcvm, supravm, virtainers
from virtainer.spec.settings import DIALECTS, TRANSLATE
from virtainer.validators import Invalid, parse_flag, parse_name, parse_password


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda dialect: dialect.__name__.rsplit(".", 1)[-1])
def test_every_dialect_name_is_an_environment_name_of_its_setting(dialect: ModuleType) -> None:
    for key, names in dialect.ALIASES.items():
        assert key in SETTINGS_BY_KEY, f"{key}: no such setting"
        assert set(names) <= set(SETTINGS_BY_KEY[key].env_names)


def test_every_translated_name_is_an_alias() -> None:
    aliases = {name for setting in SETTINGS for name in setting.env_aliases}
    assert set(TRANSLATE) <= aliases
    assert set(TRANSLATE) == {*supravm.TRANSLATE, *runcvm.TRANSLATE, *virtainers.TRANSLATE}


def test_an_environment_name_belongs_to_one_setting() -> None:
    names = [name for setting in SETTINGS for name in setting.env_names]
    assert len(names) == len(set(names))


def test_names_flags_and_passwords() -> None:
    assert parse_name("web-1.a_b") == "web-1.a_b"
    for bad in ("", "-web", "web\n", "a" * 64, "wéb"):
        with pytest.raises(Invalid, match="1-63 letters"):
            parse_name(bad)
    assert [parse_flag(text) for text in (" YES", "on", "1", "false", "Off", "0")] == [True] * 3 + [False] * 3
    with pytest.raises(Invalid, match="1/true/yes/on or 0/false/no/off"):
        parse_flag("maybe")
    assert parse_password("s3cret pass") == "s3cret pass"
    for bad in ("short", "x" * 129, "line\nbreak1", "tab\tinside"):
        with pytest.raises(Invalid, match="8 to 128 printable characters on one line"):
            parse_password(bad)


def test_every_layer_asks_the_one_validator() -> None:
    with pytest.raises(ConfigError, match=r"invalid snapshot name=.*: 1-63 letters"):
        snapshots.check_name("snap\n")
    with pytest.raises(ConfigError, match="invalid VIRTAINER_API='maybe': 1/true/yes/on or 0/false/no/off"):
        api_container.enabled({"VIRTAINER_API": "maybe"})
    with pytest.raises(ConfigError, match="VIRTAINER_GUEST_CONTROL_ACCESS='2': 1/true/yes/on"):
        controller_config({"VIRTAINER_GUEST_CONTROL_ACCESS": "2"})
    with pytest.raises(ConfigError, match="invalid password='<hidden>': 8 to 128 printable") as raised:
        guest.set_password(None, "root", "short")  # type: ignore[arg-type]  # refused before any call
    assert "short" not in str(raised.value)
