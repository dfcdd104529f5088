"""One router per resource: vms, snapshots, health, events."""
