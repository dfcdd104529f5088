"""`--runtime=virtainer`: an OCI runtime that runs any container image's command in a VM.

Layers (nothing in the core imports this package):
  plan (what create decided) <- processes (the launcher's and exec client's OCI processes) <-
    bundle (config.json rewriting) <- cli (runc's command line); entry (what dockerd runs: runc's
    own verbs straight to runc, the rest on to cli) <- cli
  plan <- vm (domain XML, guest config) <- launcher (the container's process, in the VM's container)
  artifacts (runtime tree, guest kernel + initramfs, cached by content hash), install (daemon.json)
"""
