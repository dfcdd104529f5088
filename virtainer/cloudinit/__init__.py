"""cloud-init NoCloud seeds: build the files, master the `cidata` ISO, check a prebuilt one.

Independent of libvirt and of the VM spec: the input is a `SeedRequest`. See `seed` for how
user-data, SSH keys and passwords combine, and `iso` for the on-disk format.
"""

from virtainer.cloudinit.iso import (
    SEED_VOLUME_LABEL,
    read_seed_iso,
    validate_seed_iso,
    write_secret_file,
    write_seed_iso,
)
from virtainer.cloudinit.seed import (
    META_DATA,
    NETWORK_CONFIG,
    USER_DATA,
    VENDOR_DATA,
    PasswordPolicy,
    Seed,
    SeedRequest,
    build_seed,
    validate_hostname,
)

__all__ = [
    "META_DATA",
    "NETWORK_CONFIG",
    "SEED_VOLUME_LABEL",
    "USER_DATA",
    "VENDOR_DATA",
    "PasswordPolicy",
    "Seed",
    "SeedRequest",
    "build_seed",
    "read_seed_iso",
    "validate_hostname",
    "validate_seed_iso",
    "write_secret_file",
    "write_seed_iso",
]
