"""The settings of the systems users come from, each in its own module.

A dialect names the spec's settings as that system does (`ALIASES`: setting key -> its
environment variables there) and translates the values that mean something else there
(`TRANSLATE`: variable -> translator; VM_GUEST_VNC=1 is port 5999). The settings table
(`virtainer.spec.settings`) adds these names to the canonical `VIRTAINER_*` ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

# (alias name, value, whole environment) -> the canonical value's text
AliasTranslator = Callable[[str, str, Mapping[str, str]], str]
