"""The container controller: what runs as the virtainer image's main process.

`container/entrypoint.py` only calls `main()`. The pieces are separate so each can be tested and
reused (the REST API of a later issue starts from the same `Controller`):

- `config`    controller settings and the VM's raw settings as a container sees them: baked
              image defaults < files users mount (/tmp/id_rsa.pub, /tmp/user-data, ...) < env;
- `preflight` what the container was started with (capabilities, devices) -> one-line errors
              that name the missing flag;
- `daemons`   libvirtd as a supervised child (started, awaited, restarted if it dies);
- `network`   the guest LAN (a subnet that avoids the container's routes) and the iptables
              rules: every port of the container (or the explicit port rules) to the guest,
              the guest's forwards, its isolation;
- `logsink`   docker logs: the serial console plus one line per step and readiness stage;
- `health`    the ready file the image's HEALTHCHECK tests;
- `controller` the orchestration, signals and graceful stop.
"""

from virtainer.controller.controller import Controller, main

__all__ = ["Controller", "main"]
