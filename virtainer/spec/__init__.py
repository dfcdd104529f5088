"""The one typed VM spec, and the settings it is read from.

A spec is assembled from raw settings (CLI flags, a JSON/YAML file, environment variables, API
JSON), each remembered with the name the user wrote (`RAM`, `--memory`, `memory (vm.yaml)`),
and validated once by `resolve_spec`. Every invalid value raises `ConfigError` naming that
setting, the value and what is accepted; nothing touches the disk before a spec exists.

    model        VmSpec and the types it is made of
    settings     the settings table (file keys, environment variables, CLI flags) and its readers
    parsers      one parser per kind of value; network: the network's parsers and checks
    reader       reads a setting through its parser, naming it as the user wrote it
    resolution   resolve_spec: raw settings + facts -> VmSpec
    facts        what resolution depends on outside the settings: the host
    container    the virtainer container's facts, and what they decide about the network
    dialects     the names and value forms of virtainers, SupraVM and RunCVM

Everything public is re-exported here: `from virtainer.spec import X` is the way in.
"""

from __future__ import annotations

from virtainer.spec.container import (
    CANDIDATE_SUBNETS,
    NAT_NETWORK,
    RESERVED_SUBNETS,
    ContainerFacts,
    NetworkSetupError,
    ReservedPort,
    check_lan,
    choose_subnet,
    container_ports,
    uses_nat_network,
)
from virtainer.spec.dialects import AliasTranslator
from virtainer.spec.dialects.supravm import FORWARDS_FORM as SUPRAVM_FORWARDS_FORM
from virtainer.spec.dialects.supravm import PORTS_FORM as SUPRAVM_PORTS_FORM
from virtainer.spec.dialects.supravm import ROOT as SUPRAVM_ROOT
from virtainer.spec.dialects.supravm import VNC_PORT as SUPRAVM_VNC_PORT
from virtainer.spec.dialects.supravm import data_disks as supravm_data_disks
from virtainer.spec.dialects.supravm import parse_storage_id
from virtainer.spec.facts import HostFacts, running_in_container
from virtainer.spec.model import (
    ACCELERATORS,
    CLOCK_OFFSETS,
    DEFAULT_STATE_ROOT,
    DISK_BUSES,
    DISK_CACHES,
    FILESYSTEMS,
    FIRMWARES,
    MACHINES,
    PASSWORD_POLICIES,
    READINESS_FILE,
    VIDEO_MODELS,
    VNC_BASE_PORT,
    Accelerator,
    ClockOffset,
    DataDisk,
    DirectBoot,
    Firmware,
    GuestForward,
    ImageSource,
    NetworkMode,
    NetworkSpec,
    PasswordPolicy,
    PortRange,
    PortRule,
    Protocol,
    VmSpec,
    VncSpec,
    spec_with,
)
from virtainer.spec.network import (
    FORWARDS_FORM,
    PORTS_FORM,
    USER_DEFAULT_PORTS,
    USER_FORWARDS_MAX,
    check_port_targets,
    check_user_mode_ports,
    parse_guest_forward,
    parse_guest_forwards,
    parse_lan,
    parse_network,
    parse_port_rule,
    parse_port_rules,
)
from virtainer.spec.parsers import (
    MAX_SECONDS,
    NAME_MAX,
    PATH_MAX,
    SSH_KEY_FILE_MAX,
    URL_FORMS,
    VARIANT_FORMS,
    default_user_for,
    is_ascii_number,
    parse_choice,
    parse_cmdline,
    parse_disk,
    parse_existing_file,
    parse_hostname,
    parse_int,
    parse_listen_address,
    parse_mac,
    parse_os_variant,
    parse_path,
    parse_profile,
    parse_ready_command,
    parse_seconds,
    parse_sha256,
    parse_size,
    parse_ssh_key,
    parse_stages,
    parse_url,
    parse_user,
    parse_vnc,
    parse_vnc_password,
    timeout_argument,
)
from virtainer.spec.resolution import (
    DISK_NAMES_PER_PREFIX,
    IDE_DISKS_MAX,
    NETWORK_CONTROL,
    resolve_spec,
)
from virtainer.spec.settings import (
    CONFIG_FILE_MAX,
    SETTINGS,
    SETTINGS_BY_KEY,
    RawSettings,
    RawValue,
    Setting,
    merge_settings,
    settings_from_env,
    settings_from_file,
    settings_from_mapping,
)
from virtainer.stages import ALL_STAGES, EXEC_PROBE, STAGES, Stage
from virtainer.validators import Invalid, parse_flag, parse_name

__all__ = [
    "ACCELERATORS", "ALL_STAGES", "CANDIDATE_SUBNETS", "CLOCK_OFFSETS", "CONFIG_FILE_MAX",
    "DEFAULT_STATE_ROOT", "DISK_BUSES", "DISK_CACHES", "DISK_NAMES_PER_PREFIX", "EXEC_PROBE", "FILESYSTEMS",
    "FIRMWARES", "FORWARDS_FORM", "IDE_DISKS_MAX", "MACHINES", "MAX_SECONDS", "NAME_MAX", "NAT_NETWORK",
    "NETWORK_CONTROL", "PASSWORD_POLICIES", "PATH_MAX", "PORTS_FORM", "READINESS_FILE", "RESERVED_SUBNETS",
    "SETTINGS", "SETTINGS_BY_KEY", "SSH_KEY_FILE_MAX", "STAGES", "SUPRAVM_FORWARDS_FORM", "SUPRAVM_PORTS_FORM",
    "SUPRAVM_ROOT", "SUPRAVM_VNC_PORT", "URL_FORMS", "USER_DEFAULT_PORTS", "USER_FORWARDS_MAX", "VARIANT_FORMS",
    "VIDEO_MODELS", "VNC_BASE_PORT", "Accelerator", "AliasTranslator", "ClockOffset", "ContainerFacts", "DataDisk",
    "DirectBoot", "Firmware", "GuestForward", "HostFacts", "ImageSource", "Invalid", "NetworkMode",
    "NetworkSetupError", "NetworkSpec", "PasswordPolicy", "PortRange", "PortRule", "Protocol", "RawSettings",
    "RawValue", "ReservedPort", "Setting", "Stage", "VmSpec", "VncSpec", "check_lan",
    "check_port_targets", "check_user_mode_ports", "choose_subnet", "container_ports",
    "default_user_for", "is_ascii_number", "merge_settings", "parse_choice", "parse_cmdline", "parse_disk",
    "parse_existing_file", "parse_flag", "parse_guest_forward", "parse_guest_forwards", "parse_hostname",
    "parse_int", "parse_lan", "parse_listen_address", "parse_mac", "parse_name", "parse_network",
    "parse_os_variant", "parse_path", "parse_port_rule", "parse_port_rules", "parse_profile", "parse_ready_command",
    "parse_seconds", "parse_sha256", "parse_size", "parse_ssh_key", "parse_stages", "parse_storage_id", "parse_url",
    "parse_user", "parse_vnc", "parse_vnc_password", "resolve_spec", "running_in_container", "settings_from_env",
    "settings_from_file", "settings_from_mapping", "spec_with", "supravm_data_disks", "timeout_argument",
    "uses_nat_network",
]  # fmt: skip
