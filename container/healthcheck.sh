#!/bin/sh
# Docker HEALTHCHECK: healthy once the controller has seen every readiness stage it waits for.
# The controller writes the file atomically and removes it when the VM stops being ready (or, with
# wait_for=...,exec:CMD, when CMD fails 3 times in a row in the guest; it runs every 10 s).
# The manager (VIRTAINER_MANAGER=1, no VM): healthy while its API answers.
case "${VIRTAINER_MANAGER:-}" in
  1|true|yes|on|True|TRUE|Yes|YES|On|ON) exec python3 -c 'import os, urllib.request; urllib.request.urlopen("http://127.0.0.1:%s/healthz" % (os.environ.get("VIRTAINER_API_PORT") or "8470"), timeout=2)' ;;
esac
test -e /run/virtainer/ready
