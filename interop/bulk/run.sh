#!/usr/bin/env bash
# Bulk transfer under loss on real sockets: rtcmesh against node-datachannel (libdatachannel,
# what Godot's native webrtc-native uses), both directions, in a private network namespace
# (no packet leaves the machine) where nftables drops a random share of every UDP datagram.
# This kernel has no netem (CONFIG_NET_SCH_NETEM), so there is loss but no added delay: the
# round trip is the namespace's own (tens of microseconds), and recovery time is what differs.
#
# Usage: interop/bulk/run.sh [size] [count] [seconds per transfer] [runs] [loss % ...]
#        (default 16384 2000 10 3 0 2)
# Needs: root (for the namespace), nft (nftables), node + interop/bulk/node_modules
# (`npm ci` there). Everything it starts ends with it; the namespace goes with the process.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../.."

if [ -z "${RTCMESH_IN_NETNS:-}" ]; then
    cargo build --release -q -p rtcmesh-tokio --example bulk_peer
    [ -d interop/bulk/node_modules ] || (cd interop/bulk && npm ci --silent --no-audit --no-fund)
    exec timeout 900 unshare -n env RTCMESH_IN_NETNS=1 "$self" "$@"
fi

ip link set lo up
ip link add b0 type veth peer name b1
ip addr add 10.252.0.1/24 dev b0 && ip addr add 10.252.0.2/24 dev b1
ip link set b0 up && ip link set b1 up

size=${1:-16384}; count=${2:-2000}; seconds=${3:-10}; runs=${4:-3}
shift $(( $# < 4 ? $# : 4 ))
losses=("$@"); [ ${#losses[@]} -gt 0 ] || losses=(0 2)
echo "bulk: ${size} B reliable messages, at most ${count} or ${seconds} s per transfer, ${runs} runs, loss ${losses[*]} %"
node interop/bulk/bulk.mjs target/release/examples/bulk_peer "$size" "$count" "$seconds" "$runs" "${losses[@]}"
