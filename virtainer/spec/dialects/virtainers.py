"""virtainers, the closest ancestor: its environment variables and its diff's name."""

from __future__ import annotations

from virtainer.spec.dialects import AliasTranslator

ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("VM_NAME",),
    "vcpus": ("CPU",),
    "memory": ("RAM",),
    "image": ("IMAGE",),
    "image_url": ("IMAGE_URL",),
    "os_variant": ("OS_VARIANT",),
    "seed_path": ("CLOUD_INIT_DISK",),
    "image_dir": ("IMAGE_DIR",),
}
TRANSLATE: dict[str, AliasTranslator] = {}
DIFF_NAME = "local_image.qcow2"  # the diff in IMAGE_DIR, as virtainers names it
