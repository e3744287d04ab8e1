#!/usr/bin/env bash
# Interop test: headless Chromium and aiortc join an rtcmesh server (SceneMultiplayer layer) through
# rtcmesh's signaling server over wss:// (a certificate the server generates; Chromium loads its
# page over https:// with it and trusts it by its key's hash), each echoes on all four channels and
# they relay to each other through the server; then Chromium calls restartIce() in the middle of a
# reliable stream, and rtcmesh must follow the new offer without losing the peer or a packet.
# First, Chromium, node-datachannel and aiortc each answer an offer made by rtcmesh (with its
# session-level a=x-rtcmesh-* attributes) and must not echo those (interop/offer_check.*).
# Then node-datachannel (libdatachannel, the stack of Godot's native WebRTC extension) joins
# the lobby $NATIVE_JOINS times in a row as a Godot native client, echoing on every channel
# each time: every join must succeed (issue 25.7: about 1 in 30 failed).
# Everything runs inside a private network namespace with only loopback, so no packet
# can leave the machine; the rtcmesh server also has a loopback-only remote allowlist.
#
# Needs: root (for the namespace), /usr/bin/chromium, node + interop/node_modules (playwright-core,
# node-datachannel), python3 with aiortc and websockets. `.ci/run` installs them. Fails, never
# skips.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

if [ -z "${RTCMESH_IN_NETNS:-}" ]; then
    cargo build --release -q -p rtcmesh-tokio --example interop_server
    exec unshare -n env RTCMESH_IN_NETNS=1 "$self" "$@"
fi

ip link set lo up
log=$(mktemp)
fifo=$(mktemp -u)
mkfifo "$fifo"
cleanup() { exec 3>&- 2>/dev/null || true; wait "${server_pid:-}" 2>/dev/null || true; rm -f "$fifo" "$log"; }
trap cleanup EXIT

# The server exits when its stdin (the fifo) closes, or after 90 s whatever happens.
native_joins=${NATIVE_JOINS:-100}
RTCMESH_INTEROP_SECONDS=180 target/release/examples/interop_server <"$fifo" >"$log" 2>&1 &
server_pid=$!
exec 3>"$fifo"

ready=""
for _ in $(seq 1 200); do
    ready=$(grep -m1 '^READY ' "$log" || true)
    [ -n "$ready" ] && break
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "interop: FAILED, the rtcmesh server did not start"; cat "$log"; exit 1
fi
read -r _ url lobby cert key <<<"$ready"
echo "interop: rtcmesh signaling at $url (TLS, certificate $cert), lobby $lobby"

# Chromium, node-datachannel and aiortc answer an rtcmesh offer (with rtcmesh's session-level
# attributes) without echoing them: such a peer never gets rtcmesh's own retransmission.
status=0
offer="$(dirname "$cert")/offer.sdp"
timeout 60 node interop/offer_check.mjs "$offer" || status=1
timeout 30 python3 interop/offer_check.py "$offer" || status=1

start=$(date +%s%N)
timeout 60 node interop/browser_client.mjs "$url" "$lobby" "$cert" "$key" & browser=$!
timeout 60 python3 interop/aiortc_client.py "$url" "$lobby" "$cert" & aiortc=$!
wait "$browser" || status=1
wait "$aiortc" || status=1
echo "interop: both clients finished in $(( ($(date +%s%N) - start) / 1000000 )) ms"
NODE_EXTRA_CA_CERTS="$cert" timeout 120 node --experimental-websocket --no-warnings \
    interop/godot_native_client.mjs "$url" "$lobby" "$native_joins" 10 || status=1
exec 3>&-
wait "$server_pid" || true
sed 's/^/  /' "$log"
# Chromium's restartIce(): rtcmesh followed the new offer on the same connection (the restart
# ended, and no peer connected twice).
if ! grep -q '^server: ICE restart of [0-9]* ended' "$log"; then
    echo "interop: rtcmesh did not report the end of Chromium's ICE restart"; status=1
fi
if [ "$(grep -c '^server: peer_connected' "$log")" -ne $((2 + native_joins)) ]; then
    echo "interop: a client connected more than once (the restart must keep the connection)"; status=1
fi
if [ "$status" -ne 0 ]; then
    echo "interop: FAILED"
    exit 1
fi
echo "interop: OK (chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), aiortc $(python3 -c 'import aiortc; print(aiortc.__version__)'), node-datachannel ${native_joins} joins)"
