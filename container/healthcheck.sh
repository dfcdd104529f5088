#!/bin/sh
# Docker HEALTHCHECK: healthy once the controller has seen every readiness stage it waits for.
# The controller writes the file atomically and removes it when the VM stops being ready (or, with
# wait_for=...,exec:CMD, when CMD fails 3 times in a row in the guest; it runs every 10 s).
test -e /run/virtainer/ready
