"""virtainer: full virtual machines that run, ship and share as ordinary containers.

Layers, dependencies pointing inward only:
  errors <- spec <- (domain rendering, cloudinit, storage, accel) <- hypervisor (libvirt) <-
  readiness <- machine (lifecycle) <- (cli, api, container entrypoint)
"""

__version__ = "0.1.0"

