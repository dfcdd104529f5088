"""Property-based fuzzing of every setting: any text, through every channel, gives a valid spec or
one line of ConfigError, never another exception.

Every setting of the SETTINGS table is tried through its CLI flag, its environment variable and
every alias, and its key in a spec file (any YAML value, not only text). Each channel also runs
in the presence of a second, valid setting that pulls the resolution down other paths (a NAT
network in a container, a Windows profile, a SupraVM layout, a kernel), so that the checks across
settings see hostile values too. Paths the values may name are real: the host's file system.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virtainer.cli import build_parser, settings_from_args
from virtainer.errors import ConfigError
from virtainer.firmware import UefiFirmware
from virtainer.spec import (
    SETTINGS,
    HostFacts,
    RawSettings,
    RawValue,
    VmSpec,
    merge_settings,
    resolve_spec,
    settings_from_env,
    settings_from_file,
    settings_from_mapping,
)

# per setting and channel: ~50 settings x 3 channels (and every alias) within ~20 s; the fast tier
# (scripts/test-fast.sh) asks for fewer: every setting and channel still, in a few seconds
EXAMPLES = int(os.environ.get("VIRTAINER_FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)

# text a user may type: any character, with the ones parsers trip on made likely
TRICKY = ["²", "١٢", "٣", "\n", "\t", "\r", "\x1b", "\x7f", "\u2028", "~", "~nosuchuser/", "..", "/", ",", ":",
          ";", " ", "-", "0", "9" * 400, "nan", "inf", "-1", "1e400", "G", "M", "file://", "http://",
          "\udcff"]  # fmt: skip
texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=6)), max_size=6).map("".join),
)
env_texts = texts.filter(lambda text: "\0" not in text)  # an environment cannot carry NUL
yaml_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
        st.floats(allow_nan=True, allow_infinity=True), texts,
    ),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _host(tmp: Path) -> HostFacts:
    code, template = tmp / "OVMF_CODE.fd", tmp / "OVMF_VARS.fd"
    for path in (code, template):
        path.write_bytes(b"\0" * 16)
    return HostFacts(cpus=4, memory_mib=8192, uefi=UefiFirmware(code, template), swtpm=True, in_container=True)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> HostFacts:
    return _host(tmp_path_factory.mktemp("firmware"))


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> list[RawSettings]:
    """Valid companions for the fuzzed setting: each steers resolution down another path."""
    root = tmp_path_factory.mktemp("context")
    image = root / "base.qcow2"
    image.write_bytes(b"QFI\xfb")
    kernel = root / "vmlinuz"
    kernel.write_bytes(b"kernel")
    store = root / "opt-vm"
    (store / "windows" / "ID").mkdir(parents=True)
    (store / "windows" / "ID" / "sys.qcow2").write_bytes(b"QFI\xfb")
    (store / "windows" / "ID" / "data0.qcow2").write_bytes(b"QFI\xfb")

    def raw(**values: object) -> RawSettings:
        return {key: RawValue(value, key) for key, value in values.items()}

    return [
        raw(state_dir=str(root / "state")),
        raw(image=str(image), state_dir=str(root / "state"), network="default", vnc="on"),
        raw(kernel=str(kernel), state_dir=str(root / "state"), network="user"),
        raw(storage_id="ID", storage_root=str(store), profile="windows", state_dir=str(root / "state")),
    ]


def _outcome(build: object) -> None:
    """The property: a VmSpec, or one ConfigError line."""
    try:
        spec = build()  # type: ignore[operator]
    except ConfigError as error:
        text = str(error)
        assert text and "\n" not in text and "\r" not in text, repr(text)
        assert text.startswith("invalid "), text
        return
    assert isinstance(spec, VmSpec)
    assert spec.vcpus >= 1 and spec.memory_mib >= 64
    assert math.isfinite(spec.boot_timeout_s) and spec.boot_timeout_s > 0
    assert math.isfinite(spec.stop_timeout_s) and spec.stop_timeout_s > 0


def _resolve(layer: RawSettings, context: RawSettings, host: HostFacts) -> VmSpec:
    return resolve_spec(merge_settings(context, layer), host)


@pytest.mark.parametrize("setting", SETTINGS, ids=[setting.key for setting in SETTINGS])
def test_any_text_in_a_flag(setting, host: HostFacts, contexts: list[RawSettings]) -> None:
    parser = build_parser()

    @FUZZ
    @given(text=env_texts, which=st.integers(0, len(contexts) - 1))
    def check(text: str, which: int) -> None:
        args = parser.parse_args(["render", f"{setting.flag}={text}"])
        _outcome(lambda: _resolve(settings_from_args(args), contexts[which], host))

    check()


@pytest.mark.parametrize(
    ("setting", "name"),
    [(setting, name) for setting in SETTINGS for name in setting.env_names],
    ids=[name for setting in SETTINGS for name in setting.env_names],
)
def test_any_text_in_an_environment_variable(setting, name: str, host: HostFacts, contexts: list[RawSettings]) -> None:
    @FUZZ
    @given(text=env_texts, which=st.integers(0, len(contexts) - 1), other=env_texts)
    def check(text: str, which: int, other: str) -> None:
        # the variable alone, and beside another of the same setting's names with another value
        _outcome(lambda: _resolve(settings_from_env({name: text}), contexts[which], host))
        for second in setting.env_names:
            if second != name:
                _outcome(lambda second=second: _resolve(settings_from_env({name: text, second: other}),
                                                        contexts[which], host))  # fmt: skip

    check()


@pytest.mark.parametrize("setting", SETTINGS, ids=[setting.key for setting in SETTINGS])
def test_any_value_under_a_file_key(setting, host: HostFacts, contexts: list[RawSettings]) -> None:
    @FUZZ
    @given(value=yaml_values, which=st.integers(0, len(contexts) - 1))
    def check(value: object, which: int) -> None:
        _outcome(lambda: _resolve(settings_from_mapping({setting.key: value}, "vm.yaml"), contexts[which], host))
        dashed = setting.key.replace("_", "-")
        if dashed != setting.key:  # one file, the key spelt both ways
            both = {setting.key: value, dashed: "1"}
            _outcome(lambda: _resolve(settings_from_mapping(both, "vm.yaml"), contexts[which], host))

    check()


def test_any_bytes_as_the_spec_file(tmp_path_factory: pytest.TempPathFactory, host: HostFacts) -> None:
    """`-f FILE`: any content (not YAML, not UTF-8, nested deeply, a list) is a spec or one line."""
    path = tmp_path_factory.mktemp("spec-file") / "vm.yaml"

    deep = st.sampled_from([b"[" * 2000, b"{a: " * 2000, b"- " * 2000 + b"x"])  # past Python's recursion limit
    encoded = texts.map(lambda text: text.encode("utf-8", "surrogateescape"))

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(content=st.one_of(st.binary(max_size=200), encoded, deep))
    def check(content: bytes) -> None:
        path.write_bytes(content)
        _outcome(lambda: resolve_spec(settings_from_file(path), host))

    check()
