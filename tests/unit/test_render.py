"""`virtainer render` prints what `up` defines: the MAC recorded beside the diff (not one derived
from its path), the disks' recorded formats and the diff's declared base (issue 9 §5). With the
real qemu-img and renderer; tests/integration/test_tiny_lifecycle.py compares it with a real up."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from tests.unit.test_storage import make_base
from virtainer import cli, machine, nic
from virtainer.domain import TemplateCodeCache
from virtainer.domain_model import parse_domain
from virtainer.spec import HostFacts, RawValue, VmSpec, resolve_spec


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTAINER_CACHE_DIR", str(tmp_path / "cache"))


def cloud_spec(tmp_path: Path) -> VmSpec:
    raw = {"image": str(make_base(tmp_path / "base.qcow2")), "diff": str(tmp_path / "vm" / "diff.qcow2"),
           "state_dir": str(tmp_path / "state"), "network": "network:default", "accelerator": "tcg",
           "disks": [f"{tmp_path / 'data.qcow2'},64M"]}  # fmt: skip
    return resolve_spec({key: RawValue(value, key) for key, value in raw.items()}, HostFacts(2, 4096))


def test_render_is_what_up_defines_with_the_recorded_mac_and_formats(tmp_path: Path) -> None:
    spec = cloud_spec(tmp_path)
    plan = machine.plan_up(spec, None, machine.QuietReporter())
    machine._write_vm_files(plan, machine.QuietReporter())  # what `up` writes before it defines
    defined = plan.domain_xml()
    recorded = nic.saved_mac(spec)
    assert recorded is not None and recorded != nic.default_mac(spec)  # a new diff: a random MAC

    rendered = machine.render(spec)
    assert rendered == defined
    model = parse_domain(rendered)
    assert [each.mac for each in model.nics] == [recorded]
    system = model.disk_of(spec.diff_path)
    assert system is not None and system.format == "qcow2"
    assert system.backing == (str((tmp_path / "base.qcow2").resolve()), "qcow2")
    data = model.disk_of(tmp_path / "data.qcow2")
    assert data is not None and data.format == "qcow2"


def test_render_writes_nothing(tmp_path: Path) -> None:
    spec = cloud_spec(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    machine.render(spec)
    assert sorted(path for path in tmp_path.rglob("*") if "cache" not in path.parts) == [
        path for path in before if "cache" not in path.parts
    ]


def test_the_template_code_cache_never_breaks_a_render(tmp_path: Path) -> None:
    """Compiled templates are kept between runs; a cache directory that is gone, or an entry that
    is garbage, costs a compile and nothing else."""
    loader = jinja2.DictLoader({"t.j2": "<a>{{ x }}</a>"})

    def render(cache: TemplateCodeCache, value: int) -> str:
        return jinja2.Environment(loader=loader, bytecode_cache=cache).get_template("t.j2").render(x=value)

    assert render(TemplateCodeCache(str(tmp_path / "gone")), 1) == "<a>1</a>"
    cache = TemplateCodeCache(str(tmp_path))
    assert render(cache, 2) == "<a>2</a>"
    entries = list(tmp_path.glob("__jinja2_*.cache"))
    assert len(entries) == 1  # kept for the next run
    entries[0].write_bytes(jinja2.bccache.bc_magic + b"\x80\x05not a pickle")
    assert render(cache, 3) == "<a>3</a>"
    entries[0].write_bytes(b"")
    assert render(cache, 4) == "<a>4</a>"


def test_render_prints_the_xml_byte_for_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Names, paths and MACs are printed as they are: rich would turn the ':cd:' of this MAC into
    an emoji (a random MAC did, and `render` no longer matched what `up` defined)."""
    args = ["render", "vm", "--image", str(make_base(tmp_path / "base.qcow2")), "--diff", str(tmp_path / "d.qcow2"),
            "--state-dir", str(tmp_path / "state"), "--accelerator", "tcg", "--mac", "52:54:00:cd:09:ca"]  # fmt: skip
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert '<mac address="52:54:00:cd:09:ca"/>' in printed
    assert printed == machine.render(cli.spec_from_args(cli.build_parser().parse_args(args)))
