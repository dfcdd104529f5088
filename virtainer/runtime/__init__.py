"""`--runtime=virtainer`: an OCI runtime that runs any container image's command in a VM.

Layers (nothing in the core imports this package):
  plan (what create decided) <- processes (the launcher's and exec client's OCI processes) <-
    bundle (config.json rewriting) <- cli (runc's command line); entry (what dockerd runs: runc's
    own verbs straight to runc, the rest on to cli) <- cli
  plan <- guest_io (ports, the guest init's config) <- vm (domain XML, initramfs) <- launcher (the
    container's process: sets the VM up with libvirt, then execs) supervisor (<- guest_io, qmp: the
    same process without libvirt while the VM runs)
  artifacts (runtime tree, guest kernel + initramfs, cached by content hash), install (daemon.json)
"""
