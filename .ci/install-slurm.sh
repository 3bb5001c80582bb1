#!/usr/bin/env bash
# Install a Slurm controller, node daemon, client tools and munge for the test clusters, and iproute2
# (`ip`) for the multi-node one (tests/slurm_netns.py: one network namespace per node; nsenter is util-linux).
#
# Idempotent: does nothing when every binary is already present, so CI and tests/slurm_cluster.py
# can call it unconditionally. Debian/Ubuntu only (apt-get); needs root (or passwordless sudo).
# Measured on Debian 12: ~10 s when the apt lists are fresh (Slurm 22.05).
set -euo pipefail

need=()
for bin in slurmctld slurmd sbatch munged; do
    command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
# mungekey ships with munge >= 0.5.14; older munge uses create-munge-key.
if ! command -v mungekey >/dev/null 2>&1 && ! command -v create-munge-key >/dev/null 2>&1; then
    need+=(mungekey)
fi
pkgs=(slurmctld slurmd slurm-client munge)
if ! command -v ip >/dev/null 2>&1; then need+=(ip); pkgs+=(iproute2); fi
if ! command -v nsenter >/dev/null 2>&1; then need+=(nsenter); pkgs+=(util-linux); fi
if [ "${#need[@]}" -eq 0 ]; then
    echo "install-slurm: already installed ($(slurmctld -V 2>/dev/null || echo slurm))"
    exit 0
fi
echo "install-slurm: missing ${need[*]}; installing"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-slurm: need root or sudo" >&2; exit 1; }
    SUDO="sudo"
fi
command -v apt-get >/dev/null 2>&1 || { echo "install-slurm: apt-get not found (Debian/Ubuntu only)" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
# Package post-install scripts try to start services; without systemd they may fail harmlessly,
# policy-rc.d 101 tells them not to try.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
if ! $SUDO apt-get install -y --no-install-recommends "${pkgs[@]}"; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${pkgs[@]}"
fi
echo "install-slurm: done ($(slurmctld -V))"
