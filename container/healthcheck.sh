#!/bin/sh
# Docker HEALTHCHECK: healthy once the controller has seen every readiness stage it waits for.
# The controller writes the file atomically and removes it when the VM stops being ready.
test -e /run/virtainer/ready
