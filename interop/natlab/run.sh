#!/usr/bin/env bash
# NAT lab: real NATs (nftables), a real TURN server (Debian's coturn) and rtcmesh-tokio peers, all
# inside network namespaces this script creates and removes (also on failure). Nothing is
# connected to the host's own network: 203.0.113.0/24 (TEST-NET-3) exists only on a bridge in a
# namespace, the private LANs only behind their routers.
#
#   A 10.1.0.2 -- cone NAT      (masquerade)              -- 203.0.113.11 \
#   B 10.2.0.2 -- symmetric NAT (masquerade fully-random) -- 203.0.113.12  >- bridge: coturn 203.0.113.1,.2
#   C 10.3.0.2 -- cone NAT      (masquerade)              -- 203.0.113.13 /   public host P 203.0.113.20
#   F 10.4.0.2 -- firewall: only TCP to coturn's 443 and to P, no UDP -- 203.0.113.15
#      (the router 10.4.0.1 is F's DNS resolver, as a network's own resolver is)
#   coturn with use-auth-secret 203.0.113.3 (on the bridge); rtcmesh-signal minting for it on P:9081
#
#   LAN (no uplink): L 10.5.0.2 (rtcmesh), M 10.5.0.3 (Chromium) -- switch, router 10.5.0.1
#
# Checks:
#  1. coturn sees the NATs as intended (RFC 5780 probe: A endpoint-independent, B dependent).
#  2. A, B, C form a full rtcmesh mesh through rtcmesh-signal (on P) with STUN + TURN: A-C
#     direct (server-reflexive), A-B and C-B relayed (B's NAT defeats STUN).
#  3. Headless Chromium in B with iceTransportPolicy "relay" joins an rtcmesh server (on P,
#     Godot's channel layout plus one) through TURN: echoes on all four channels, relay pair.
#  4. A wrong TURN password is reported by rtcmesh within seconds.
#  5. NAT rebinding: A and C stream reliable packets both ways, directly, while their NATs map
#     them anew (C's to a new port, A's to a new port, C's to a new address): no peer lost,
#     every packet once and in order; prints each recovery time and what the meshes reported.
#  6. UDP blocked: F's firewall lets out only TCP to coturn's TLS listener (443, a certificate
#     for turn.rtcmesh.test from a CA this script makes) and to P. An rtcmesh-tokio peer in F
#     reaches a peer on P through `turns:` (relay only) and exchanges data on every channel;
#     headless Chromium in F joins an rtcmesh server through `turns:` too (echoes on all four
#     channels, a relay pair over TLS). Prints connect time and relayed throughput (1,200 B
#     reliable) through TURN/TLS against TURN/UDP (from B, relay only) in the same run, and
#     Chromium's connect time through TURN/TLS. F resolves the TURN server's name through its
#     router's DNS resolver: without one Chromium took 13 s (its resolver asks DNS for a TURN
#     server's name, as the fully qualified "turn.rtcmesh.test.", before the hosts file).
#  7. mDNS on a LAN with no uplink: headless Chromium (mDNS on, its default: its host candidates
#     are <uuid>.local names) joins an rtcmesh server on the LAN with no ICE server at all. L's
#     host firewall drops UDP nobody asked for, so Chromium's checks cannot teach rtcmesh its
#     address (peer-reflexively): rtcmesh must resolve the name over mDNS and check first. The
#     selected pair is host <-> host on both sides; prints the connect time and the mDNS counts.
#  8. Minted credentials: coturn with use-auth-secret; rtcmesh-signal with the same secret mints
#     them (?turn=1, which join asks for). Peers in A and B with no TURN server of their own,
#     relay only, connect through it and exchange data; a peer given an expired credential
#     (signed with the right secret) gets IceServerError::Unauthorized, printed.
# Needs root, iproute2, nftables, conntrack, coturn, openssl, node + interop/node_modules,
# /usr/bin/chromium (`.ci/run` installs them). Fails, never skips.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

fail() { echo "natlab: FAILED: $*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces)"
for tool in ip nft conntrack turnserver turnutils_natdiscovery node /usr/bin/chromium; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done

cargo build --release -q -p rtcmesh-tokio --features server --bin rtcmesh-signal --example natlab_peer --example interop_server
bin=$root/target/release

# Namespace names unique to this run, so two runs never touch each other's.
P="nl$$"
NS=(pub ra rb rc rf a b c f p lan l m)
work=$(mktemp -d)
nsx() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }

down() {
    # End what runs inside our namespaces (by pid), then delete them.
    for n in "${NS[@]}"; do
        pids=$(ip netns pids "$P-$n" 2>/dev/null || true)
        [ -n "$pids" ] && kill $pids 2>/dev/null || true
    done
    sleep 0.5
    for n in "${NS[@]}"; do
        pids=$(ip netns pids "$P-$n" 2>/dev/null || true)
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
        ip netns del "$P-$n" 2>/dev/null || true
    done
    rm -rf "$work" "/etc/netns/$P-f"
}
trap down EXIT
trap "exit 1" INT TERM HUP

up() {
    for n in "${NS[@]}"; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
    ip -n "$P-pub" link add br0 type bridge
    ip -n "$P-pub" addr add 203.0.113.1/24 dev br0
    ip -n "$P-pub" addr add 203.0.113.2/24 dev br0   # coturn's alternate address (RFC 5780)
    ip -n "$P-pub" addr add 203.0.113.3/24 dev br0   # coturn with use-auth-secret (step 8)
    ip -n "$P-pub" link set br0 up
    # "The rest of the internet": packets for addresses that exist nowhere (a peer's private
    # host candidate) vanish, as on the real internet, instead of failing coturn's sendto()
    # (which would close the whole allocation): a default route into a veth whose other end
    # drops them. The public namespace forwards nothing.
    ip -n "$P-pub" link add sink0 type veth peer name sink1
    ip -n "$P-pub" link set sink0 up
    ip -n "$P-pub" link set sink1 up
    ip -n "$P-pub" route add default via 198.51.100.1 dev sink0 onlink
    ip -n "$P-pub" neigh add 198.51.100.1 lladdr 02:00:00:00:00:01 dev sink0 nud permanent
    ip -n "$P-p" link add eth0 type veth peer name pp netns "$P-pub"
    ip -n "$P-pub" link set pp master br0
    ip -n "$P-pub" link set pp up
    ip -n "$P-p" addr add 203.0.113.20/24 dev eth0
    ip -n "$P-p" link set eth0 up
    ip -n "$P-p" route add default via 203.0.113.1
    local i=0 r
    for r in a b c; do
        i=$((i + 1))
        ip -n "$P-r$r" link add wan type veth peer name "p$r" netns "$P-pub"
        ip -n "$P-pub" link set "p$r" master br0
        ip -n "$P-pub" link set "p$r" up
        ip -n "$P-r$r" addr add "203.0.113.1$i/24" dev wan
        ip -n "$P-r$r" link set wan up
        ip -n "$P-r$r" link add lan type veth peer name eth0 netns "$P-$r"
        ip -n "$P-r$r" addr add "10.$i.0.1/24" dev lan
        ip -n "$P-r$r" link set lan up
        ip -n "$P-$r" addr add "10.$i.0.2/24" dev eth0
        ip -n "$P-$r" link set eth0 up
        ip -n "$P-$r" route add default via "10.$i.0.1"
        nsx "r$r" sysctl -qw net.ipv4.ip_forward=1
        ip -n "$P-r$r" route add default via 203.0.113.1
    done
    # Cone NATs: masquerade keeps the port => endpoint-independent mapping; conntrack lets in
    # only replies => port-restricted filtering. Unsolicited inbound is dropped before
    # conntrack confirms it, or it would steal the port the host's own mapping needs.
    for r in a c; do
        nsx "r$r" nft -f - <<'NFT'
table ip nat {
  chain post { type nat hook postrouting priority srcnat; oifname "wan" masquerade; }
  chain pre  { type filter hook prerouting priority mangle; iifname "wan" ct state new drop; }
}
NFT
    done
    # Symmetric NAT: a random public port per destination.
    nsx rb nft -f - <<'NFT'
table ip nat {
  chain post { type nat hook postrouting priority srcnat; oifname "wan" masquerade fully-random; }
  chain pre  { type filter hook prerouting priority mangle; iifname "wan" ct state new drop; }
}
NFT
    # F: a network that lets out only TCP, to the TURN server's TLS port and to the public host
    # (signaling); every UDP packet is dropped, both ways.
    ip -n "$P-rf" link add wan type veth peer name pf netns "$P-pub"
    ip -n "$P-pub" link set pf master br0
    ip -n "$P-pub" link set pf up
    ip -n "$P-rf" addr add 203.0.113.15/24 dev wan
    ip -n "$P-rf" link set wan up
    ip -n "$P-rf" link add lan type veth peer name eth0 netns "$P-f"
    ip -n "$P-rf" addr add 10.4.0.1/24 dev lan
    ip -n "$P-rf" link set lan up
    ip -n "$P-f" addr add 10.4.0.2/24 dev eth0
    ip -n "$P-f" link set eth0 up
    ip -n "$P-f" route add default via 10.4.0.1
    nsx rf sysctl -qw net.ipv4.ip_forward=1
    ip -n "$P-rf" route add default via 203.0.113.1
    nsx rf nft -f - <<'NFT'
table ip nat {
  chain post { type nat hook postrouting priority srcnat; oifname "wan" masquerade; }
}
table ip filter {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" ip daddr 203.0.113.1 tcp dport 443 accept
    iifname "lan" ip daddr 203.0.113.20 meta l4proto tcp accept
  }
}
NFT
    # F resolves the TURN server's name (the one its certificate is for) through its router's
    # DNS resolver (a network that lets only TCP 443 out still answers DNS itself); `ip netns
    # exec` mounts /etc/netns/<name>/* over /etc/*. The resolver is the router's own (INPUT),
    # so the forward chain above still drops every UDP packet that would leave F.
    mkdir -p "/etc/netns/$P-f"
    printf '127.0.0.1 localhost\n' >"/etc/netns/$P-f/hosts"
    printf 'nameserver 10.4.0.1\n' >"/etc/netns/$P-f/resolv.conf"
    nsx rf python3 "$root/interop/natlab/dns.py" 10.4.0.1 turn.rtcmesh.test=203.0.113.1 &
    # The LAN (step 7): a switch whose router (10.5.0.1) has no uplink, as at a LAN party. The
    # hosts still get a default route from it: without one Chromium gathers no host candidate
    # at all (with no camera/microphone permission it uses the default route's address only).
    ip -n "$P-lan" link add br0 type bridge
    ip -n "$P-lan" addr add 10.5.0.1/24 dev br0
    ip -n "$P-lan" link set br0 up
    local h
    for h in l:2 m:3; do
        ip -n "$P-${h%:*}" link add eth0 type veth peer name "p${h%:*}" netns "$P-lan"
        ip -n "$P-lan" link set "p${h%:*}" master br0
        ip -n "$P-lan" link set "p${h%:*}" up
        ip -n "$P-${h%:*}" addr add "10.5.0.${h#*:}/24" dev eth0
        ip -n "$P-${h%:*}" link set eth0 up
        ip -n "$P-${h%:*}" route add default via 10.5.0.1
    done
    # L's host firewall: UDP gets in only as replies to what L sent, mDNS excepted (counted
    # from Chromium's address: its answers and announcements).
    nsx l nft -f - <<'NFT'
table inet host {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "eth0" ip saddr 10.5.0.3 udp sport 5353 counter accept
    iifname "eth0" udp dport 5353 accept
    iifname "eth0" meta l4proto udp ct state new counter drop
  }
}
NFT
}

# A CA of this run's own and a certificate from it for turn.rtcmesh.test (coturn's TLS).
certificates() {
    local d=$work/tls
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=rtcmesh natlab CA" -keyout "$d/ca.key" -out "$d/ca.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=turn.rtcmesh.test" -keyout "$d/turn.key" -out "$d/turn.csr" 2>/dev/null
    printf 'subjectAltName=DNS:turn.rtcmesh.test\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >"$d/ext"
    openssl x509 -req -in "$d/turn.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -extfile "$d/ext" -out "$d/turn.pem" 2>/dev/null
    cat "$d/turn.pem" "$d/ca.pem" >"$d/chain.pem"
}

ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(ms)
up
certificates
nsx pub turnserver -n --no-cli --no-dtls --tls-listening-port 443 \
    --cert "$work/tls/chain.pem" --pkey "$work/tls/turn.key" \
    -L 203.0.113.1 -L 203.0.113.2 -E 203.0.113.1 -p 3478 --min-port 49152 --max-port 49251 \
    --lt-cred-mech --user rtcmesh:s3cret --realm rtcmesh.test --fingerprint \
    --log-file "$work/turn.log" --simple-log --no-stdout-log >/dev/null 2>&1 &
nsx p "$bin/rtcmesh-signal" 203.0.113.20:9080 >"$work/signal.log" 2>&1 &
# Step 8: coturn's REST-style credentials, and a signaling server that mints them.
secret="natlab-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
nsx pub turnserver -n --no-cli --no-tls --no-dtls -L 203.0.113.3 -E 203.0.113.3 -p 3478 \
    --min-port 49252 --max-port 49351 --use-auth-secret --static-auth-secret="$secret" \
    --realm rtcmesh.test --fingerprint --log-file "$work/turn-minted.log" --simple-log \
    --no-stdout-log --verbose >/dev/null 2>&1 &
nsx p env RTCMESH_SIGNAL_TURN_SECRET="$secret" "$bin/rtcmesh-signal" 203.0.113.20:9081 \
    --turn-url turn:203.0.113.3:3478 --turn-ttl 600 >"$work/signal-minted.log" 2>&1 &
for port in 9080 9081; do
    for _ in $(seq 1 50); do
        nsx p bash -c "exec 3<>/dev/tcp/203.0.113.20/$port" 2>/dev/null && break
        sleep 0.1
    done
done
sleep 0.5   # coturn binds its listeners
echo "natlab: lab up in $(( $(ms) - t0 )) ms (namespaces $P-*)"

status=0
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; status=1; fi; }

# 1. The NATs behave as the lab says (coturn's own RFC 5780 probe).
natprobe() { nsx "$1" timeout 20 turnutils_natdiscovery -m -f 203.0.113.1 2>&1 | grep '^NAT with' || true; }
check "A: endpoint-independent mapping" "natprobe a | grep -q 'Endpoint Independent Mapping'"
check "B: address and port dependent mapping" "natprobe b | grep -q 'Address and Port Dependent Mapping'"

# 2. Three rtcmesh-tokio peers form a full mesh.
ice=(stun:203.0.113.1:3478 turn:203.0.113.1:3478 rtcmesh s3cret)
url=ws://203.0.113.20:9080
nsx a timeout 70 "$bin/examples/natlab_peer" "$url" - 10.1.0.2 2 "${ice[@]}" >"$work/a.log" 2>&1 &
pa=$!
lobby=""
for _ in $(seq 1 100); do
    lobby=$(awk '/^LOBBY /{print $2; exit}' "$work/a.log")
    [ -n "$lobby" ] && break
    sleep 0.1
done
[ -n "$lobby" ] || { cat "$work/a.log"; fail "peer A did not create a lobby"; }
mesh_start=$(ms)
nsx b timeout 70 "$bin/examples/natlab_peer" "$url" "$lobby" 10.2.0.2 2 "${ice[@]}" >"$work/b.log" 2>&1 &
pb=$!
nsx c timeout 70 "$bin/examples/natlab_peer" "$url" "$lobby" 10.3.0.2 2 "${ice[@]}" >"$work/c.log" 2>&1 &
pc=$!
peers_ok=0
wait $pa || peers_ok=1
wait $pb || peers_ok=1
wait $pc || peers_ok=1
echo "natlab: mesh of three finished in $(( $(ms) - mesh_start )) ms"
for n in a b c; do sed "s/^/  $n: /" "$work/$n.log"; done
check "A, B and C form a full mesh" "[ $peers_ok = 0 ]"
me() { awk '/^ME /{print $2; exit}' "$work/$1.log"; }
A=$(me a); B=$(me b); C=$(me c)
echo "natlab: ids A=$A B=$B C=$C"
kind() { awk -v id="$2" '$1=="PATH" && $2==id {print $6}' "$work/$1.log"; }
took() { awk -v id="$2" '$1=="PATH" && $2==id {print $3}' "$work/$1.log"; }
check "A-C direct (server-reflexive, no relay)" "[ \"\$(kind a $C)\" = direct ] && [ \"\$(kind c $A)\" = direct ]"
check "A-B relayed (B's NAT is symmetric)" "[ \"\$(kind a $B)\" = relayed ] && [ \"\$(kind b $A)\" = relayed ]"
check "C-B relayed" "[ \"\$(kind c $B)\" = relayed ] && [ \"\$(kind b $C)\" = relayed ]"
check "A gathered srflx and relay" "grep -q '^GATHERED srflx 203.0.113.11:' $work/a.log && grep -q '^GATHERED relay 203.0.113.1:' $work/a.log"
srflx_ms=$(took c "$A")
relay_ms=$(took b "$A")
echo "natlab: time to connect (lobby announce -> PeerConnected): via srflx A-C ${srflx_ms:-?} ms, via relay A-B ${relay_ms:-?} ms, C-B $(took b "$C") ms"

# 3. Chromium behind the symmetric NAT, relay only, joins an rtcmesh server through TURN.
srv_in="$work/server.in"
mkfifo "$srv_in"
nsx p env RTCMESH_INTEROP_SECONDS=60 RTCMESH_INTEROP_ADDR=203.0.113.20 RTCMESH_INTEROP_ALLOW=203.0.113.0/24 \
    "$bin/examples/interop_server" <"$srv_in" >"$work/server.log" 2>&1 &
exec 3>"$srv_in"
ready=""
for _ in $(seq 1 100); do
    ready=$(grep -m1 '^READY ' "$work/server.log" || true)
    [ -n "$ready" ] && break
    sleep 0.1
done
[ -n "$ready" ] || { cat "$work/server.log"; fail "the rtcmesh server did not start"; }
read -r _ surl slobby scert skey <<<"$ready"
rtc='{"iceServers":[{"urls":"turn:203.0.113.1:3478","username":"rtcmesh","credential":"s3cret"}],"iceTransportPolicy":"relay"}'
browser_ok=0
nsx b timeout 90 node interop/browser_client.mjs "$surl" "$slobby" "$scert" "$skey" "$rtc" >"$work/chromium.log" 2>&1 || browser_ok=1
exec 3>&-
sed 's/^/  chromium: /' "$work/chromium.log" | grep -v '^\s*chromium: \[page\]' || true
check "Chromium (relay only, symmetric NAT) joins through TURN, echoes on 4 channels" "[ $browser_ok = 0 ]"
check "Chromium's selected pair is relayed" "grep -q '\"pair\":{\"local\":\"relay\"' $work/chromium.log"
chromium_ms=$(grep -o '"connectMs":[0-9]*' "$work/chromium.log" | head -1 | cut -d: -f2 || true)
echo "natlab: Chromium through TURN: channels open ${chromium_ms:-?} ms after its offer"

# 4. A wrong password is reported within seconds.
nsx p "$bin/examples/natlab_peer" "$url" - 203.0.113.20 1 stun:203.0.113.1:3478 turn:203.0.113.1:3478 rtcmesh wrong >"$work/wrong.log" 2>&1 &
pw=$!
wrong_start=$(ms)
reported=""
for _ in $(seq 1 100); do
    reported=$(grep -m1 '^SERVER_FAILED turn:' "$work/wrong.log" || true)
    [ -n "$reported" ] && break
    sleep 0.1
done
kill $pw 2>/dev/null || true
echo "natlab: wrong password: ${reported:-nothing} after $(( $(ms) - wrong_start )) ms"
check "a wrong TURN password is reported" "echo '$reported' | grep -q 'refused the username or credential'"

# 5. NAT rebinding: A (id 1, answers) and C (offers) stream to each other directly through
#    their cone NATs, a reliable packet every 20 ms each way, while the NATs map them anew:
#    C's to a new public port, then A's, then C's to a new public address. Each NAT forgets its
#    UDP mappings (conntrack -D: what a mapping timeout or a router reset does) and maps by a
#    changed rule, still endpoint-independently; TCP (the signaling WebSocket) keeps its
#    mapping, as when only a UDP mapping expired. The other NAT still filters: traffic from
#    the new mapping gets in only once the peer behind it sent there.
stream_peer() { # namespace, bind ip, lobby
    local fifo="$work/$1.in"
    mkfifo "$fifo"
    nsx "$1" timeout 90 "$bin/examples/natlab_peer" "$url" "$3" "$2" 1 "${ice[@]}" stream \
        <"$fifo" >"$work/$1-stream.log" 2>&1 5>&- 6>&- &
}
stream_peer a 10.1.0.2 -
sa=$!
exec 5>"$work/a.in"
slobby=""
for _ in $(seq 1 100); do
    slobby=$(awk '/^LOBBY /{print $2; exit}' "$work/a-stream.log")
    [ -n "$slobby" ] && break
    sleep 0.1
done
[ -n "$slobby" ] || { cat "$work/a-stream.log"; fail "stream peer A did not create a lobby"; }
stream_peer c 10.3.0.2 "$slobby"
sc=$!
exec 6>"$work/c.in"
# Waits (at most $1 tenths of a second) until the shell condition $2 holds.
wait_for() {
    local i
    for i in $(seq 1 "$1"); do eval "$2" && return 0; sleep 0.1; done
    return 1
}
streaming() { grep -q '^STREAMING ' "$work/a-stream.log" && grep -q '^STREAMING ' "$work/c-stream.log"; }
# Arrival (Unix ms) at $1 of the first packet sent at or after $2, if any yet.
first_after() { awk -v t="$2" '$1=="RECV" && $3>=t {print $4; exit}' "$work/$1-stream.log"; }
recovered() { [ -n "$(first_after a "$1")" ] && [ -n "$(first_after c "$1")" ]; }
# The public address:port the NAT in router namespace $1 maps private address:port $2:$3's UDP to
# (the reply destination of a flow from there, in the router's conntrack table).
public_of() { nsx "$1" awk -v src="src=$2 " -v sport="sport=$3 " '$0 ~ /udp/ && index($0, src) && index($0, sport) {
    for (i = 1; i <= NF; i++) if ($i ~ /^dst=/) d = substr($i, 5); else if ($i ~ /^dport=/) p = substr($i, 7);
    print d ":" p; exit }' /proc/net/nf_conntrack; }
# The stream peer's socket port in namespace $1.
socket_port() { awk '/^SOCKET /{ n = split($2, a, ":"); print a[n]; exit }' "$work/$1-stream.log"; }
recovery=""
rebind_ok=0
# remap ROUTER PRIVATE-IP PORT NAME NFT-RULE: the NAT maps UDP by NFT-RULE from now on, forgets
# its UDP mappings. Prints the recovery: from then until the first packet sent after it arrives.
remap() {
    local before at ta tc n
    before=$(public_of "$1" "$2" "$3")
    nsx "$1" nft flush chain ip nat post
    nsx "$1" nft add rule ip nat post "$5"
    nsx "$1" nft add rule ip nat post oifname wan masquerade
    nsx "$1" conntrack -D -p udp >/dev/null 2>&1 || true
    at=$(ms)   # the old mappings are gone: count from here
    if wait_for 150 "recovered $at"; then
        ta=$(( $(first_after a "$at") - at )); tc=$(( $(first_after c "$at") - at ))
        echo "natlab: $4: ${before:-?} -> $(public_of "$1" "$2" "$3"); the first packets sent after it arrived after $tc ms (A to C), $ta ms (C to A)"
        recovery="$recovery, $4 $(( ta > tc ? ta : tc )) ms"
    else
        echo "natlab: $4: ${before:-?} -> $(public_of "$1" "$2" "$3"); no packet sent after it arrived within 15 s"
        rebind_ok=1
    fi
    sleep 1
    # What each side's mesh reported meanwhile, and its longest wait for a packet.
    for n in a c; do
        awk -v t="$at" -v n="${n^^}" '
            $1=="EVENT" && $2>=t { $1=""; $2="  " n " +" ($2 - t) " ms"; print }
            $1=="RECV" && $4>=t { if (last && $4 - last > gap) { gap = $4 - last; from = last } last = $4 }
            END { if (gap) print "    " n ": longest wait for a packet " gap " ms, from +" (from - t) " ms" }' "$work/$n-stream.log"
    done
}
other_port() { if [ "$1" = 40000 ]; then echo 40001; else echo 40000; fi; }
if wait_for 300 streaming && sleep 1; then
    check "A-C stream direct (server-reflexive)" "grep -q '^PATH .* direct$' $work/a-stream.log && grep -q '^PATH .* direct$' $work/c-stream.log"
    cport=$(socket_port c)
    aport=$(socket_port a)
    [ -n "$cport" ] && [ -n "$aport" ] || fail "the stream peers did not print their sockets"
    remap rc 10.3.0.2 "$cport" "C's NAT, new public port" \
        "oifname wan ip saddr 10.3.0.2 udp sport $cport snat to 203.0.113.13:$(other_port "$cport")"
    remap ra 10.1.0.2 "$aport" "A's NAT, new public port" \
        "oifname wan ip saddr 10.1.0.2 udp sport $aport snat to 203.0.113.11:$(other_port "$aport")"
    nsx rc ip addr add 203.0.113.14/24 dev wan
    remap rc 10.3.0.2 "$cport" "C's NAT, new public address" "oifname wan meta l4proto udp snat to 203.0.113.14"
else
    rebind_ok=1
fi
exec 5>&- 6>&-   # ends both streams
wait $sa || rebind_ok=1
wait $sc || rebind_ok=1
for n in a c; do grep -v '^RECV \|^EVENT ' "$work/$n-stream.log" | sed "s/^/  $n: /"; done
# The peers check the order themselves; count again: every packet once, in order, to the last.
in_order() { awk '$1=="RECV" { if ($2 != n) bad = 1; n++ } END { exit bad || n == 0 }' "$work/$1-stream.log"; }
check "A and C stream through three NAT rebindings: no peer lost, every packet once and in order" \
    "[ $rebind_ok = 0 ] && in_order a && in_order c && grep -q '^DONE' $work/a-stream.log && grep -q '^DONE' $work/c-stream.log"
echo "natlab: NAT rebinding recovery (change -> first packet sent after it arrives, slower direction): ${recovery#, }"

# 6. UDP blocked: only TCP to coturn's TLS listener on 443 gets out of F.
check "F: UDP to the TURN server is blocked" \
    "! nsx f timeout 5 turnutils_stunclient 203.0.113.1 2>&1 | grep -q 'UDP reflexive addr'"
check "F: TLS to turn.rtcmesh.test:443 gets through (our CA)" \
    "nsx f timeout 5 openssl s_client -connect turn.rtcmesh.test:443 -servername turn.rtcmesh.test -verify_return_error -CAfile $work/tls/ca.pem </dev/null >/dev/null 2>&1"
# One pair: $1 = label, $2 = namespace, $3 = bind ip, $4 = TURN URL, $5 = CA file or "": a peer
# on P creates a lobby and receives; the peer in $2 (relay only) joins and sends $bulk packets
# of 1,200 B. Sets pair_ok, connect_ms (P's view: lobby announce -> connected, allocation
# included), alloc_ms (the joiner's relayed candidate, from its start), rate (kB/s).
bulk=5000
run_pair() {
    local log_p="$work/pair-$1-p.log" log_j="$work/pair-$1-j.log" plobby=""
    # Created here: the background job's redirection may come after the first look below.
    : >"$log_p"
    nsx p timeout 60 "$bin/examples/natlab_peer" "$url" - 203.0.113.20 1 - turn:203.0.113.1:3478 rtcmesh s3cret bulk "$bulk" >"$log_p" 2>&1 &
    local pp=$!
    for _ in $(seq 1 100); do
        plobby=$(awk '/^LOBBY /{print $2; exit}' "$log_p")
        [ -n "$plobby" ] && break
        sleep 0.1
    done
    pair_ok=0
    if [ -n "$plobby" ]; then
        nsx "$2" env RTCMESH_ICE_POLICY=relay ${5:+RTCMESH_TURN_CA=$5} timeout 60 "$bin/examples/natlab_peer" \
            "$url" "$plobby" "$3" 1 - "$4" rtcmesh s3cret bulk "$bulk" >"$log_j" 2>&1 || pair_ok=1
    else
        pair_ok=1
    fi
    wait $pp || pair_ok=1
    connect_ms=$(awk '$1=="PATH" {print $3; exit}' "$log_p")
    alloc_ms=$(awk '$1=="GATHERED" && $2=="relay" {print $4; exit}' "$log_j")
    rate=$(awk '$1=="RATE" && $3 > 0 {printf "%d", $2 / $3; exit}' "$log_p")
    grep -q '^CHANNELS ok' "$log_p" && grep -q '^CHANNELS ok' "$log_j" || pair_ok=1
    grep -q '^PATH .* relayed$' "$log_j" || pair_ok=1
}
tls_connect=(); udp_connect=(); tls_rate=(); udp_rate=(); tls_alloc=(); udp_alloc=()
pairs_ok=0
for round in 1 2 3; do
    run_pair "tls$round" f 10.4.0.2 turns:turn.rtcmesh.test:443 "$work/tls/ca.pem"
    [ $pair_ok = 0 ] || { pairs_ok=1; sed "s/^/  tls$round: /" "$work/pair-tls$round-j.log" "$work/pair-tls$round-p.log" | grep -v ' RECV ' | tail -n 20; }
    tls_connect+=("${connect_ms:-0}"); tls_rate+=("${rate:-0}"); tls_alloc+=("${alloc_ms:-0}")
    run_pair "udp$round" b 10.2.0.2 turn:203.0.113.1:3478 ""
    [ $pair_ok = 0 ] || { pairs_ok=1; sed "s/^/  udp$round: /" "$work/pair-udp$round-j.log" "$work/pair-udp$round-p.log" | tail -n 20; }
    udp_connect+=("${connect_ms:-0}"); udp_rate+=("${rate:-0}"); udp_alloc+=("${alloc_ms:-0}")
done
sed 's/^/  f: /' "$work/pair-tls1-j.log" | grep -E 'GATHERED|SERVER_FAILED|PATH|CHANNELS' || true
check "an rtcmesh peer in F (UDP blocked) reaches a public peer through turns:, every channel both ways, 3 times" "[ $pairs_ok = 0 ]"
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
tc=$(median "${tls_connect[@]}"); uc=$(median "${udp_connect[@]}")
tr=$(median "${tls_rate[@]}"); ur=$(median "${udp_rate[@]}")
ta=$(median "${tls_alloc[@]}"); ua=$(median "${udp_alloc[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
echo "natlab: TURN/TLS vs TURN/UDP (median of 3 rounds, each: a peer joins a lobby with one public peer, relay only):"
echo "natlab:   allocation (joiner start -> relayed candidate): TLS ${ta} ms [${tls_alloc[*]}], UDP ${ua} ms [${udp_alloc[*]}]"
echo "natlab:   connect (lobby announce -> PeerConnected, allocation included): TLS ${tc} ms [${tls_connect[*]}], UDP ${uc} ms [${udp_connect[*]}]: $(ratio "$tc" "$uc")x (target <= 1.5x)"
echo "natlab:   relayed throughput, $bulk x 1,200 B reliable: TLS ${tr} kB/s [${tls_rate[*]}], UDP ${ur} kB/s [${udp_rate[*]}]: $(ratio "$tr" "$ur")x (target >= 0.5x)"

# Chromium in F, relay only, through turns: to an rtcmesh server on P.
srv_in6="$work/server6.in"
mkfifo "$srv_in6"
nsx p env RTCMESH_INTEROP_SECONDS=60 RTCMESH_INTEROP_ADDR=203.0.113.20 RTCMESH_INTEROP_ALLOW=203.0.113.0/24 \
    "$bin/examples/interop_server" <"$srv_in6" >"$work/server6.log" 2>&1 &
exec 7>"$srv_in6"
ready=""
for _ in $(seq 1 100); do
    ready=$(grep -m1 '^READY ' "$work/server6.log" || true)
    [ -n "$ready" ] && break
    sleep 0.1
done
[ -n "$ready" ] || { cat "$work/server6.log"; fail "the rtcmesh server (step 6) did not start"; }
read -r _ surl slobby scert skey <<<"$ready"
rtc='{"iceServers":[{"urls":"turns:turn.rtcmesh.test:443?transport=tcp","username":"rtcmesh","credential":"s3cret"}],"iceTransportPolicy":"relay"}'
browser_ok=0
nsx f env RTCMESH_TRUST_CERT="$work/tls/turn.pem" timeout 90 node interop/browser_client.mjs "$surl" "$slobby" "$scert" "$skey" "$rtc" >"$work/chromium6.log" 2>&1 || browser_ok=1
exec 7>&-
sed 's/^/  chromium (F): /' "$work/chromium6.log" | grep -v '^\s*chromium (F): \[page\]' || true
check "Chromium in F (UDP blocked) joins through turns:, echoes on 4 channels" "[ $browser_ok = 0 ]"
check "Chromium's selected pair is relayed over TLS" "grep -q '\"pair\":{\"local\":\"relay\",\"remote\":\"[a-z]*\",\"relayProtocol\":\"tls\"' $work/chromium6.log"
chromium6_ms=$(grep -o '"connectMs":[0-9]*' "$work/chromium6.log" | head -1 | cut -d: -f2 || true)
echo "natlab: Chromium through TURN/TLS: channels open ${chromium6_ms:-?} ms after its offer (through TURN/UDP in step 3: ${chromium_ms:-?} ms)"

# 7. mDNS: Chromium (M) and an rtcmesh server (L) on a LAN with no uplink, no ICE server.
srv_in7="$work/server7.in"
mkfifo "$srv_in7"
nsx l env RTCMESH_INTEROP_SECONDS=60 RTCMESH_INTEROP_ADDR=10.5.0.2 RTCMESH_INTEROP_ALLOW=10.5.0.0/24 \
    "$bin/examples/interop_server" <"$srv_in7" >"$work/server7.log" 2>&1 &
srv7=$!
exec 8>"$srv_in7"
ready=""
for _ in $(seq 1 100); do
    ready=$(grep -m1 '^READY ' "$work/server7.log" || true)
    [ -n "$ready" ] && break
    sleep 0.1
done
[ -n "$ready" ] || { cat "$work/server7.log"; fail "the rtcmesh server (step 7) did not start"; }
read -r _ surl slobby scert skey <<<"$ready"
browser_ok=0
nsx m env RTCMESH_CHROMIUM_MDNS=1 timeout 90 node interop/browser_client.mjs "$surl" "$slobby" "$scert" "$skey" \
    '{"iceServers":[]}' >"$work/chromium7.log" 2>&1 || browser_ok=1
exec 8>&-   # the server prints its counts and exits
wait $srv7 || true
sed 's/^/  chromium (M): /' "$work/chromium7.log" | grep -v '^\s*chromium (M): \[page\]' || true
grep -E '^PATH |^MDNS |peer_connected' "$work/server7.log" | sed 's/^/  rtcmesh (L): /' || true
mdns_in=$(nsx l nft list chain inet host input | awk '/sport 5353/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }')
dropped=$(nsx l nft list chain inet host input | awk '/ct state new/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }')
echo "natlab: L's firewall: ${mdns_in:-?} mDNS packets from Chromium let in (its announcement, then answers), ${dropped:-?} unsolicited UDP packets dropped"
check "Chromium's host candidates are mDNS names" \
    "grep -q '\"hostCandidates\":\[\"[0-9a-f-]*\.local\"' $work/chromium7.log && ! grep -q '\"hostCandidates\":\[[^]]*10\.5\.' $work/chromium7.log"
check "Chromium on a LAN with no uplink joins the rtcmesh server, echoes on 4 channels" "[ $browser_ok = 0 ]"
check "Chromium's selected pair is host <-> host" "grep -q '\"pair\":{\"local\":\"host\",\"remote\":\"host\"' $work/chromium7.log"
check "rtcmesh's selected pair is host <-> host, to Chromium's LAN address" "grep -q '^PATH [0-9]* host 10\.5\.0\.2:[0-9]* -> host 10\.5\.0\.3:' $work/server7.log"
# Chromium announces a name once, when it makes it; every further packet is an answer to a
# query. (It ignores a query with two questions, A and AAAA, as mdns-sd asks: rtcmesh asks
# one question per message too. Before that this run saw only the announcement, and the name
# resolved only when the announcement came after rtcmesh started asking.)
check "rtcmesh resolved Chromium's name over mDNS, Chromium answered its queries" "grep -q '^MDNS resolved [1-9]' $work/server7.log && [ \"\${mdns_in:-0}\" -ge 2 ]"
chromium7_ms=$(grep -o '"connectMs":[0-9]*' "$work/chromium7.log" | head -1 | cut -d: -f2 || true)
# The same without L's firewall (what most LAN hosts have): Chromium's first checks get in, and
# the answering side checks at once instead of after its 1 s wait for them (see internet.md).
# rtcmesh learns Chromium's address from the name or from its first check, whichever is first
# (host or prflx on rtcmesh's side, the same address).
nsx l nft delete table inet host
nsx l env RTCMESH_INTEROP_SECONDS=60 RTCMESH_INTEROP_ADDR=10.5.0.2 RTCMESH_INTEROP_ALLOW=10.5.0.0/24 \
    "$bin/examples/interop_server" <"$srv_in7" >"$work/server7b.log" 2>&1 &
srv7=$!
exec 8>"$srv_in7"
ready=""
for _ in $(seq 1 100); do
    ready=$(grep -m1 '^READY ' "$work/server7b.log" || true)
    [ -n "$ready" ] && break
    sleep 0.1
done
[ -n "$ready" ] || { cat "$work/server7b.log"; fail "the rtcmesh server (step 7, no firewall) did not start"; }
read -r _ surl slobby scert skey <<<"$ready"
browser_ok=0
nsx m env RTCMESH_CHROMIUM_MDNS=1 timeout 90 node interop/browser_client.mjs "$surl" "$slobby" "$scert" "$skey" \
    '{"iceServers":[]}' >"$work/chromium7b.log" 2>&1 || browser_ok=1
sleep 1   # the name's answer, which the connection did not wait for
exec 8>&-
wait $srv7 || true
grep '^chromium: {' "$work/chromium7b.log" | sed 's/^/  chromium (M, L without firewall): /' || true
grep -E '^PATH |^MDNS ' "$work/server7b.log" | sed 's/^/  rtcmesh (L without firewall): /' || true
check "without L's firewall too: Chromium joins, host <-> host on its side, to Chromium's LAN address on rtcmesh's" \
    "[ $browser_ok = 0 ] && grep -q '\"pair\":{\"local\":\"host\",\"remote\":\"host\"' $work/chromium7b.log && grep -q '^PATH [0-9]* host 10\.5\.0\.2:[0-9]* -> [a-z]* 10\.5\.0\.3:' $work/server7b.log"
chromium7b_ms=$(grep -o '"connectMs":[0-9]*' "$work/chromium7b.log" | head -1 | cut -d: -f2 || true)
echo "natlab: mDNS on the LAN: Chromium's channels open ${chromium7_ms:-?} ms after its offer behind L's firewall (rtcmesh must resolve the name first), ${chromium7b_ms:-?} ms without it"

# 8. Minted TURN credentials: two peers with no TURN server of their own, relay only, join
#    through the minting signaling server (join asks with ?turn=1).
murl=ws://203.0.113.20:9081
: >"$work/minted-a.log"
nsx a env RTCMESH_ICE_POLICY=relay timeout 60 "$bin/examples/natlab_peer" "$murl" - 10.1.0.2 1 - - - - >"$work/minted-a.log" 2>&1 &
pma=$!
mlobby=""
for _ in $(seq 1 100); do
    mlobby=$(awk '/^LOBBY /{print $2; exit}' "$work/minted-a.log")
    [ -n "$mlobby" ] && break
    sleep 0.1
done
minted_ok=0
if [ -n "$mlobby" ]; then
    nsx b env RTCMESH_ICE_POLICY=relay timeout 60 "$bin/examples/natlab_peer" "$murl" "$mlobby" 10.2.0.2 1 - - - - \
        >"$work/minted-b.log" 2>&1 || minted_ok=1
else
    minted_ok=1
fi
wait $pma || minted_ok=1
for n in a b; do grep -E '^(GATHERED|SERVER_FAILED|PATH|DONE|FAILED)' "$work/minted-$n.log" | sed "s/^/  minted $n: /"; done
minted_users=$(grep -oE 'user <[0-9]+:[^>]*>' "$work/turn-minted.log" | sort -u | sed 's/^user //' | tr '\n' ' ' || true)
echo "natlab: coturn (use-auth-secret) saw the users: ${minted_users:-none}"
check "A and B (no TURN server of their own) connect relayed with credentials minted by rtcmesh-signal" \
    "[ $minted_ok = 0 ] && grep -q '^GATHERED relay 203.0.113.3:' $work/minted-a.log && grep -q '^GATHERED relay 203.0.113.3:' $work/minted-b.log && grep -q '^PATH .* relayed$' $work/minted-a.log && grep -q '^PATH .* relayed$' $work/minted-b.log"
# An expired credential, signed with the right secret (coturn's scheme: the username is
# "<expiry>:<name>", the credential base64(HMAC-SHA1(secret, username))), given to a peer
# through the plain signaling server (which mints nothing, so nothing replaces it).
expired_user="$(( $(date +%s) - 60 )):expired"
expired_cred=$(printf '%s' "$expired_user" | openssl dgst -sha1 -hmac "$secret" -binary | base64)
nsx a timeout 30 "$bin/examples/natlab_peer" "$url" - 10.1.0.2 1 - turn:203.0.113.3:3478 "$expired_user" "$expired_cred" \
    >"$work/expired.log" 2>&1 &
pe=$!
expired_start=$(ms)
reported=""
for _ in $(seq 1 100); do
    reported=$(grep -m1 '^SERVER_FAILED turn:' "$work/expired.log" || true)
    [ -n "$reported" ] && break
    sleep 0.1
done
kill $pe 2>/dev/null || true
echo "natlab: expired credential ($expired_user): ${reported:-nothing} after $(( $(ms) - expired_start )) ms"
check "an expired minted-style credential is reported as refused credentials" "echo '$reported' | grep -q 'refused the username or credential'"
# The control: the same recipe with an expiry ahead is taken (so the refusal above was the expiry).
fresh_user="$(( $(date +%s) + 600 )):fresh"
fresh_cred=$(printf '%s' "$fresh_user" | openssl dgst -sha1 -hmac "$secret" -binary | base64)
nsx a timeout 30 "$bin/examples/natlab_peer" "$url" - 10.1.0.2 1 - turn:203.0.113.3:3478 "$fresh_user" "$fresh_cred" \
    >"$work/fresh.log" 2>&1 &
pf=$!
wait_for 100 "grep -q '^GATHERED relay\\|^SERVER_FAILED' $work/fresh.log" || true
kill $pf 2>/dev/null || true
check "the same credential recipe with an expiry ahead is taken (a relayed candidate)" "grep -q '^GATHERED relay 203.0.113.3:' $work/fresh.log"
echo "natlab: coturn (use-auth-secret) on the expired one: $(grep -o 'Cannot find credentials of user <[^>]*>' "$work/turn-minted.log" | head -1)"

echo "natlab: finished in $(( $(ms) - t0 )) ms"
if [ "$status" -ne 0 ]; then
    echo "--- coturn log (tail)"; tail -n 40 "$work/turn.log" || true
    fail "see above"
fi
echo "natlab: OK"
