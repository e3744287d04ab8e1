#!/usr/bin/env bash
# Runs the matchbox_socket baseline. webrtc-rs drops loopback candidates and needs a multicast
# route for mDNS, so the peers run inside a private network namespace with a veth pair that
# this script creates (and removes): no packet leaves the machine.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")"
if [ -z "${MATCHBOX_IN_NETNS:-}" ]; then
    cargo build --release -q >&2
    exec unshare -n env MATCHBOX_IN_NETNS=1 "$self" "$@"
fi
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 10.251.0.1/24 dev v0 && ip addr add 10.251.0.2/24 dev v1
ip link set v0 up && ip link set v1 up
ip route add 224.0.0.0/4 dev v0
MATCHBOX_IP=10.251.0.1 timeout 900 target/release/matchbox-baseline
