"""The NoCloud seed: generated files, merging with user-data, passwords, and the cidata ISO."""

from __future__ import annotations

import email
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from email.message import Message
from pathlib import Path
from typing import Any

import pycdlib
import pytest
import yaml

from virtainer.cloudinit import (
    Seed,
    SeedRequest,
    build_seed,
    read_seed_iso,
    validate_hostname,
    validate_seed_iso,
    write_secret_file,
    write_seed_iso,
)
from virtainer.errors import ConfigError, VirtainerError

ED25519_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0hO5bl3Ve0xqSvHwA2Y1sJjCqeoGk0dNoldhkNTb4M a@b"
RSA_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDSL7uWGj8cgWyIOaspgKdVy0cKJ+UTjfv7jBOjG2H c@d"
SCRIPT = b"#!/bin/sh\necho hello > /run/hello\n"
NETWORK_V2 = b"version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"

KEYS_ONLY = SeedRequest(hostname="vm1", default_user="debian", ssh_authorized_keys=(ED25519_KEY,))


def cloud_config(seed: Seed) -> dict[str, Any]:
    user_data = seed.files["user-data"]
    assert user_data.startswith(b"#cloud-config\n")
    loaded = yaml.safe_load(user_data)
    assert isinstance(loaded, dict)
    return loaded


def meta_data(seed: Seed) -> dict[str, Any]:
    loaded = yaml.safe_load(seed.files["meta-data"])
    assert isinstance(loaded, dict)
    return loaded


def mime_leaf_parts(seed: Seed) -> list[Message]:
    """The non-container parts, in the order cloud-init walks them."""
    document = email.message_from_bytes(seed.files["user-data"])
    assert document.is_multipart()
    return [part for part in document.walk() if not part.is_multipart()]


def payload(part: Message) -> bytes:
    decoded = part.get_payload(decode=True)
    assert isinstance(decoded, bytes)
    return decoded


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask that would leave files world-readable, to show the 0600 is deliberate."""
    previous = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(previous)


# --- generated cloud-config ----------------------------------------------------------------


def test_keys_become_top_level_authorized_keys_of_the_named_default_user() -> None:
    seed = build_seed(KEYS_ONLY)

    assert cloud_config(seed) == {"user": "debian", "ssh_authorized_keys": [ED25519_KEY]}
    assert seed.generated_password is None


def test_without_default_user_the_image_default_user_is_not_renamed() -> None:
    seed = build_seed(replace(KEYS_ONLY, default_user=None))

    assert cloud_config(seed) == {"ssh_authorized_keys": [ED25519_KEY]}


def test_duplicate_keys_are_given_once_and_stripped() -> None:
    seed = build_seed(
        replace(KEYS_ONLY, ssh_authorized_keys=(ED25519_KEY + "\n", RSA_KEY, " " + ED25519_KEY))
    )

    assert cloud_config(seed)["ssh_authorized_keys"] == [ED25519_KEY, RSA_KEY]


def test_key_with_authorized_keys_options_is_accepted() -> None:
    key = 'from="10.0.0.0/8",no-agent-forwarding ' + ED25519_KEY

    seed = build_seed(replace(KEYS_ONLY, ssh_authorized_keys=(key,)))

    assert cloud_config(seed)["ssh_authorized_keys"] == [key]


def test_meta_data_is_generated_from_hostname() -> None:
    seed = build_seed(KEYS_ONLY)

    assert meta_data(seed) == {"instance-id": seed.instance_id, "local-hostname": "vm1"}
    assert seed.instance_id.startswith("iid-")
    assert len(seed.instance_id) == len("iid-") + 16
    assert set(seed.files) == {"user-data", "meta-data"}


def test_extra_cloud_config_is_merged_into_generated_config() -> None:
    extra = {
        "disk_setup": {"/dev/vdb": {"table_type": "gpt", "layout": True}},
        "fs_setup": [{"device": "/dev/vdb1", "filesystem": "ext4", "label": "data"}],
        "mounts": [["LABEL=data", "/data"]],
    }

    seed = build_seed(replace(KEYS_ONLY, extra_cloud_config=extra))

    assert cloud_config(seed) == {"user": "debian", "ssh_authorized_keys": [ED25519_KEY], **extra}


def test_same_request_gives_byte_identical_files() -> None:
    request = replace(KEYS_ONLY, user_data=SCRIPT, network_config=NETWORK_V2)

    assert build_seed(request) == build_seed(request)


# --- instance-id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"user_data": b"#cloud-config\npackages: [htop]\n"},
        {"network_config": NETWORK_V2},
        {"hostname": "vm2"},
        {"ssh_authorized_keys": (RSA_KEY,)},
        {"meta_data": b"public-keys: []\n"},
        {"extra_cloud_config": {"mounts": [["/dev/vdb", "/data"]]}},
    ],
    ids=lambda change: next(iter(change)),
)
def test_instance_id_changes_with_content(change: dict[str, Any]) -> None:
    assert build_seed(replace(KEYS_ONLY, **change)).instance_id != build_seed(KEYS_ONLY).instance_id


def test_vendor_data_carries_per_boot_settings_outside_the_instance_id() -> None:
    """A persisted disk whose growpart setting changes (the disk grew) is still the same instance."""
    plain = build_seed(KEYS_ONLY)
    tuned = build_seed(replace(KEYS_ONLY, vendor_cloud_config={"growpart": {"mode": "off"}}))
    assert tuned.instance_id == plain.instance_id
    assert tuned.files["user-data"] == plain.files["user-data"]  # the user's config, under which it merges
    assert tuned.files["vendor-data"] == b"#cloud-config\ngrowpart:\n  mode: 'off'\n"
    assert yaml.safe_load(tuned.files["vendor-data"]) == {"growpart": {"mode": "off"}}  # a string, not false
    assert "vendor-data" not in plain.files


def test_instance_id_is_stable_for_the_same_content() -> None:
    request = replace(KEYS_ONLY, user_data=b"#cloud-config\npackages: [htop]\n")

    assert build_seed(request).instance_id == build_seed(replace(request)).instance_id


def test_changed_network_config_changes_instance_id() -> None:
    first = build_seed(replace(KEYS_ONLY, network_config=NETWORK_V2))
    second = build_seed(replace(KEYS_ONLY, network_config=NETWORK_V2.replace(b"true", b"false")))

    assert first.instance_id != second.instance_id


def test_instance_id_given_in_user_meta_data_is_kept() -> None:
    seed = build_seed(replace(KEYS_ONLY, meta_data=b"instance-id: mine-1\n"))

    assert seed.instance_id == "mine-1"
    assert meta_data(seed) == {"instance-id": "mine-1", "local-hostname": "vm1"}


def test_user_meta_data_keys_are_kept_and_an_instance_id_added() -> None:
    seed = build_seed(replace(KEYS_ONLY, meta_data=b"local-hostname: custom\nzone: lab\n"))

    assert meta_data(seed) == {
        "instance-id": seed.instance_id,
        "local-hostname": "custom",
        "zone": "lab",
    }
    assert seed.instance_id.startswith("iid-")


# --- user-data supplied by the user --------------------------------------------------------


def test_user_cloud_config_without_additions_is_kept_byte_for_byte() -> None:
    user_data = b"#cloud-config\n# a comment that a YAML round trip would lose\npackages: [htop]\n"

    seed = build_seed(SeedRequest(hostname="vm1", default_user="debian", user_data=user_data))

    assert seed.files["user-data"] == user_data
    assert seed.generated_password is None  # auto: user-data is another way in


def test_keys_are_merged_into_user_cloud_config() -> None:
    user_data = (
        b"#cloud-config\n"
        b"packages: [htop]\n"
        b"ssh_authorized_keys:\n"
        b"  - " + RSA_KEY.encode() + b"\n"
        b"  - " + ED25519_KEY.encode() + b"\n"
        b"user: admin\n"
    )

    seed = build_seed(
        replace(KEYS_ONLY, user_data=user_data, ssh_authorized_keys=(ED25519_KEY, RSA_KEY))
    )

    assert cloud_config(seed) == {
        "packages": ["htop"],
        "ssh_authorized_keys": [RSA_KEY, ED25519_KEY],  # the user's first, no duplicates
        "user": "admin",  # on a conflicting scalar the user's value wins
    }


def test_user_cloud_config_merges_extra_cloud_config_lists() -> None:
    user_data = b"#cloud-config\nmounts:\n  - [/dev/vdc, /scratch]\n"
    extra = {"mounts": [["/dev/vdb", "/data"]]}

    seed = build_seed(replace(KEYS_ONLY, user_data=user_data, extra_cloud_config=extra))

    assert cloud_config(seed)["mounts"] == [["/dev/vdc", "/scratch"], ["/dev/vdb", "/data"]]


def test_script_user_data_and_keys_become_mime_multipart() -> None:
    seed = build_seed(replace(KEYS_ONLY, user_data=SCRIPT))

    script_part, config_part = mime_leaf_parts(seed)
    assert script_part.get_content_type() == "text/x-shellscript"
    assert payload(script_part) == SCRIPT
    assert config_part.get_content_type() == "text/cloud-config"
    config = yaml.safe_load(payload(config_part))
    assert config["ssh_authorized_keys"] == [ED25519_KEY]
    assert config["merge_how"] == "list(append)+dict(no_replace,recurse_list)+str()"
    # cloud-init only parses user-data as MIME when this header comes early.
    assert b"mime-version:" in seed.files["user-data"][:4096].lower()


def test_mime_user_data_is_nested_with_its_parts_first() -> None:
    user_data = (
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="XYZ"\n'
        b"\n"
        b"--XYZ\n"
        b"Content-Type: text/x-shellscript\n"
        b"\n" + SCRIPT + b"\n"  # the line break before a boundary belongs to the boundary
        b"--XYZ\n"
        b"Content-Type: text/cloud-config\n"
        b"\n"
        b"#cloud-config\n"
        b"packages: [htop]\n"
        b"--XYZ--\n"
    )

    seed = build_seed(replace(KEYS_ONLY, user_data=user_data))

    parts = mime_leaf_parts(seed)
    assert [part.get_content_type() for part in parts] == [
        "text/x-shellscript",
        "text/cloud-config",
        "text/cloud-config",
    ]
    assert payload(parts[0]) == SCRIPT
    assert yaml.safe_load(payload(parts[2]))["ssh_authorized_keys"] == [ED25519_KEY]


def test_jinja_user_data_is_delivered_as_jinja_part() -> None:
    user_data = b"## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }}\n"

    seed = build_seed(replace(KEYS_ONLY, user_data=user_data))

    jinja_part, config_part = mime_leaf_parts(seed)
    assert jinja_part.get_content_type() == "text/jinja2"
    assert payload(jinja_part) == user_data
    assert config_part.get_content_type() == "text/cloud-config"


def test_mime_output_is_deterministic() -> None:
    request = replace(KEYS_ONLY, user_data=SCRIPT)

    assert build_seed(request).files["user-data"] == build_seed(request).files["user-data"]


@pytest.mark.parametrize(
    "user_data",
    [
        SCRIPT,
        b"#include\nhttps://example.org/config\n",
        b"#cloud-boothook\n#!/bin/sh\necho boot\n",
        b"## template: jinja\n#!/bin/sh\necho {{ v1.instance_id }}\n",
        b"#cloud-config-archive\n- type: text/cloud-config\n  content: 'packages: [htop]'\n",
        b"#cloud-config\n",
        b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=B\n\n--B\n"
        b"Content-Type: text/x-shellscript\n\n#!/bin/sh\n--B--\n",
    ],
    ids=["script", "include", "boothook", "jinja", "archive", "empty-cloud-config", "mime"],
)
def test_accepted_user_data_kinds_are_kept_as_given(user_data: bytes) -> None:
    seed = build_seed(SeedRequest(hostname="vm1", default_user=None, user_data=user_data))

    assert seed.files["user-data"] == user_data


def test_network_config_is_passed_through_unchanged() -> None:
    wrapped = b"network:\n  version: 1\n  config:\n    - type: physical\n      name: eth0\n"

    seed = build_seed(replace(KEYS_ONLY, network_config=wrapped))

    assert seed.files["network-config"] == wrapped


# --- passwords -----------------------------------------------------------------------------


def test_auto_without_keys_or_user_data_generates_a_password() -> None:
    seed = build_seed(SeedRequest(hostname="vm1", default_user="debian"))

    password = seed.generated_password
    assert password is not None
    assert len(password) >= 20
    assert cloud_config(seed) == {
        "user": "debian",
        "password": password,
        "chpasswd": {"expire": False},
        "ssh_pwauth": True,
    }


def test_auto_with_keys_sets_no_password() -> None:
    seed = build_seed(KEYS_ONLY)

    assert not {"password", "chpasswd", "ssh_pwauth"} & set(cloud_config(seed))


@pytest.mark.parametrize("policy", ["random", "auto"])
def test_stored_random_password_passed_back_keeps_the_seed(policy: str) -> None:
    first = build_seed(SeedRequest(hostname="vm1", default_user="debian", password_policy="random"))
    assert first.generated_password is not None

    again = build_seed(
        SeedRequest(
            hostname="vm1",
            default_user="debian",
            password=first.generated_password,
            password_policy=policy,  # type: ignore[arg-type]
        )
    )

    assert again.generated_password is None  # nothing new to show or store
    assert again.instance_id == first.instance_id
    assert again.files == first.files


def test_random_password_is_new_each_time_when_none_is_passed_back() -> None:
    request = SeedRequest(hostname="vm1", default_user=None, password_policy="random")

    first, second = build_seed(request), build_seed(request)

    assert first.generated_password != second.generated_password
    assert first.instance_id != second.instance_id


def test_random_policy_with_keys_still_sets_a_password() -> None:
    seed = build_seed(replace(KEYS_ONLY, password_policy="random"))

    config = cloud_config(seed)
    assert config["password"] == seed.generated_password
    assert config["ssh_authorized_keys"] == [ED25519_KEY]


def test_fixed_password_is_set_and_not_reported_as_generated() -> None:
    seed = build_seed(replace(KEYS_ONLY, password="s3cret pass", password_policy="fixed"))

    assert cloud_config(seed)["password"] == "s3cret pass"
    assert seed.generated_password is None


def test_fixed_password_with_script_user_data_goes_into_the_cloud_config_part() -> None:
    seed = build_seed(replace(KEYS_ONLY, user_data=SCRIPT, password="pw-eight", password_policy="fixed"))

    config = yaml.safe_load(payload(mime_leaf_parts(seed)[1]))
    assert config["password"] == "pw-eight"
    assert config["ssh_pwauth"] is True


def test_none_policy_sets_no_password_even_without_keys() -> None:
    seed = build_seed(SeedRequest(hostname="vm1", default_user="debian", password_policy="none"))

    assert cloud_config(seed) == {}
    assert seed.generated_password is None


def test_fixed_policy_without_password_is_rejected() -> None:
    with pytest.raises(ConfigError) as raised:
        build_seed(replace(KEYS_ONLY, password_policy="fixed"))

    assert raised.value.setting == "password"


def test_password_with_none_policy_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as raised:
        build_seed(replace(KEYS_ONLY, password="topsecret", password_policy="none"))

    assert raised.value.setting == "password"
    assert "topsecret" not in str(raised.value)


def test_multi_line_password_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as raised:
        build_seed(replace(KEYS_ONLY, password="top\nsecret", password_policy="fixed"))

    assert raised.value.setting == "password"
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize("password", ["pw", "x" * 129, "tab\tinside"])
def test_the_seed_takes_a_password_by_the_rule_of_the_password_setting(password: str) -> None:
    with pytest.raises(ConfigError, match="8 to 128 printable characters on one line") as raised:
        build_seed(replace(KEYS_ONLY, password=password, password_policy="fixed"))

    assert raised.value.setting == "password"


# --- validation errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"hostname": "-vm"}, "hostname"),
        ({"hostname": "vm-"}, "hostname"),
        ({"hostname": "a" * 64}, "hostname"),
        ({"hostname": "vm.example.org"}, "hostname"),
        ({"hostname": "under_score"}, "hostname"),
        ({"hostname": ""}, "hostname"),
        ({"default_user": "Debian"}, "default_user"),
        ({"default_user": "1user"}, "default_user"),
        ({"ssh_authorized_keys": ("not a key",)}, "ssh_authorized_keys"),
        ({"ssh_authorized_keys": ("ssh-ed25519",)}, "ssh_authorized_keys"),
        (
            {"ssh_authorized_keys": ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n",)},
            "ssh_authorized_keys",
        ),
        ({"ssh_authorized_keys": (ED25519_KEY + "\n" + RSA_KEY,)}, "ssh_authorized_keys"),
        ({"user_data": b""}, "user_data"),
        ({"user_data": b"hello world\n"}, "user_data"),
        ({"user_data": b" #cloud-config\n"}, "user_data"),
        ({"user_data": b"#cloud-config\n- a list\n- not a mapping\n"}, "user_data"),
        ({"user_data": b"#cloud-config\npackages: [htop\n"}, "user_data"),
        ({"user_data": b"\x1f\x8b\x08\x00compressed"}, "user_data"),
        ({"user_data": b"Content-Type: multipart/mixed; boundary=B\n\n--B--\n"}, "user_data"),
        ({"user_data": b"MIME-Version: 1.0\nContent-Type: text/plain\n\nhi\n"}, "user_data"),
        ({"meta_data": b"- not\n- a mapping\n"}, "meta_data"),
        ({"meta_data": b"key: [unclosed\n"}, "meta_data"),
        ({"meta_data": b"instance-id: ''\n"}, "meta_data"),
        ({"network_config": b"version: 3\n"}, "network_config"),
        ({"network_config": b"version: true\n"}, "network_config"),
        ({"network_config": b"ethernets: {}\n"}, "network_config"),
        ({"network_config": b"network:\n  ethernets: {}\n"}, "network_config"),
        ({"network_config": b"- version: 2\n"}, "network_config"),
        ({"network_config": b"version: [2\n"}, "network_config"),
        ({"password_policy": "sometimes"}, "password_policy"),
    ],
)
def test_invalid_input_names_the_setting(change: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build_seed(replace(KEYS_ONLY, **change))

    assert raised.value.setting == setting
    assert f"invalid {setting}=" in str(raised.value)


def test_invalid_cloud_config_error_explains_the_yaml_problem() -> None:
    with pytest.raises(ConfigError) as raised:
        build_seed(replace(KEYS_ONLY, user_data=b"#cloud-config\npackages: [htop\n"))

    assert raised.value.value == "#cloud-config"
    assert raised.value.hint is not None
    assert "YAML" in raised.value.hint


@pytest.mark.parametrize("hostname", ["vm1", "a", "web-01", "A" * 63, "0abc"])
def test_valid_hostnames_are_accepted(hostname: str) -> None:
    validate_hostname(hostname)


# --- the ISO -------------------------------------------------------------------------------


@pytest.fixture
def full_seed() -> Seed:
    return build_seed(replace(KEYS_ONLY, user_data=SCRIPT, network_config=NETWORK_V2))


def read_with_pycdlib(path: Path, name_space: str) -> dict[str, bytes]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        _, _, names = next(iso.walk(**{name_space: "/"}))
        files = {}
        for name in names:
            content = io.BytesIO()
            iso.get_file_from_iso_fp(content, **{name_space: "/" + name})
            files[name] = content.getvalue()
        return files
    finally:
        iso.close()


def test_iso_has_volume_label_cidata_and_rock_ridge_and_joliet(
    tmp_path: Path, full_seed: Seed
) -> None:
    path = tmp_path / "seed.iso"

    write_seed_iso(full_seed, path)

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.rstrip(b" ") == b"cidata"
        assert iso.has_rock_ridge()
        assert iso.has_joliet()
    finally:
        iso.close()


@pytest.mark.parametrize("name_space", ["rr_path", "joliet_path"])
def test_iso_files_have_exact_names_and_contents(
    tmp_path: Path, full_seed: Seed, name_space: str
) -> None:
    path = tmp_path / "seed.iso"

    write_seed_iso(full_seed, path)

    assert read_with_pycdlib(path, name_space) == dict(full_seed.files)


def test_iso_plain_iso9660_names(tmp_path: Path, full_seed: Seed) -> None:
    path = tmp_path / "seed.iso"

    write_seed_iso(full_seed, path)

    assert set(read_with_pycdlib(path, "iso_path")) == {
        "USERDATA.;1",
        "METADATA.;1",
        "NETWORKCONFIG.;1",
    }


def test_read_seed_iso_round_trips(tmp_path: Path, full_seed: Seed) -> None:
    path = tmp_path / "seed.iso"

    write_seed_iso(full_seed, path)

    assert read_seed_iso(path) == dict(full_seed.files)


def test_blkid_sees_an_iso9660_labelled_cidata(tmp_path: Path, full_seed: Seed) -> None:
    blkid = shutil.which("blkid") or shutil.which("blkid", path="/usr/sbin:/sbin")
    if blkid is None:
        pytest.skip("blkid (util-linux) is not installed")
    path = tmp_path / "seed.iso"
    write_seed_iso(full_seed, path)

    result = subprocess.run(
        [blkid, "-p", "-o", "export", str(path)], capture_output=True, text=True, check=True
    )

    fields = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert fields["TYPE"] == "iso9660"
    assert fields["LABEL"] == "cidata"


@pytest.mark.usefixtures("permissive_umask")
def test_iso_is_private_and_leaves_no_staging_files(tmp_path: Path, full_seed: Seed) -> None:
    path = tmp_path / "seed.iso"

    write_seed_iso(full_seed, path)
    write_seed_iso(build_seed(KEYS_ONLY), path)  # replacing an existing seed

    assert path.stat().st_mode & 0o777 == 0o600
    assert [entry.name for entry in tmp_path.iterdir()] == ["seed.iso"]
    assert read_seed_iso(path) == dict(build_seed(KEYS_ONLY).files)


def test_failed_write_leaves_the_target_and_no_staging_file(
    tmp_path: Path, full_seed: Seed
) -> None:
    target = tmp_path / "seed.iso"
    target.mkdir()  # renaming a file over a directory fails after the ISO was written
    (target / "keep").write_text("untouched")

    with pytest.raises(VirtainerError, match="cannot write"):
        write_seed_iso(full_seed, target)

    assert [entry.name for entry in tmp_path.iterdir()] == ["seed.iso"]
    assert (target / "keep").read_text() == "untouched"


def test_write_into_missing_directory_fails_cleanly(tmp_path: Path, full_seed: Seed) -> None:
    with pytest.raises(VirtainerError, match="cannot write"):
        write_seed_iso(full_seed, tmp_path / "missing" / "seed.iso")

    assert list(tmp_path.iterdir()) == []


def test_seed_with_unknown_file_is_refused(tmp_path: Path) -> None:
    seed = Seed(
        files={"user-data": b"#cloud-config\n", "extra": b""},
        instance_id="i",
        generated_password=None,
    )

    with pytest.raises(VirtainerError, match="extra"):
        write_seed_iso(seed, tmp_path / "seed.iso")

    assert list(tmp_path.iterdir()) == []


# --- prebuilt seed ISOs --------------------------------------------------------------------


def write_iso_labelled(path: Path, label: str) -> None:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=label, joliet=3, rock_ridge="1.09")
    content = b"instance-id: prebuilt\n"
    iso.add_fp(io.BytesIO(content), len(content), "/METADATA.;1", rr_name="meta-data")
    iso.write(str(path))
    iso.close()


def test_our_iso_is_a_valid_prebuilt_seed(tmp_path: Path, full_seed: Seed) -> None:
    path = tmp_path / "seed.iso"
    write_seed_iso(full_seed, path)

    validate_seed_iso(path)


def test_prebuilt_iso_label_is_matched_in_any_case(tmp_path: Path) -> None:
    path = tmp_path / "upper.iso"
    write_iso_labelled(path, "CIDATA")

    validate_seed_iso(path)


def test_prebuilt_iso_with_another_label_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.iso"
    write_iso_labelled(path, "config-2")

    with pytest.raises(ConfigError) as raised:
        validate_seed_iso(path)

    assert raised.value.setting == "seed_iso"
    assert "config-2" in str(raised.value)


@pytest.mark.parametrize("content", [b"", b"not an iso" * 10000, b"\0" * 40000])
def test_prebuilt_seed_that_is_not_an_iso_is_rejected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "seed.iso"
    path.write_bytes(content)

    with pytest.raises(ConfigError) as raised:
        validate_seed_iso(path)

    assert raised.value.setting == "seed_iso"


@pytest.mark.parametrize("name", ["missing.iso", "."])
def test_prebuilt_seed_that_cannot_be_read_is_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_seed_iso(tmp_path / name)

    assert raised.value.setting == "seed_iso"


def test_read_seed_iso_of_a_non_iso_fails_with_virtainer_error(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    path.write_bytes(b"not an iso" * 10000)

    with pytest.raises(VirtainerError, match="cannot read seed ISO"):
        read_seed_iso(path)


# --- secret files --------------------------------------------------------------------------


@pytest.mark.usefixtures("permissive_umask")
def test_secret_file_is_private_atomic_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("old")
    path.chmod(0o644)

    write_secret_file(path, "new-sécret")

    assert path.read_text(encoding="utf-8") == "new-sécret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [entry.name for entry in tmp_path.iterdir()] == ["password"]
