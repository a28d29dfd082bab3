#!/bin/busybox sh
# busybox acpid's handler for the ACPI power button (PWRF/00000080 under its config folder):
# QEMU's system_powerdown, which `eci-build stop` and the end of `eci-build test` press.
exec /.wsl-standin/terminate
