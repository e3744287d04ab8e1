"""aiortc (an independent WebRTC stack) joins an rtcmesh server's lobby as a Godot client would:
the webrtc_signaling demo's protocol, WebRTCMultiplayerPeer's negotiated channels (1, 2, 3 and
one extra, 4) and SceneMultiplayer's RAW / SYS bytes.

Usage: python3 aiortc_client.py <ws-or-wss-url> <lobby> [ca-cert.pem]
(with wss://, the server's certificate is checked against the given CA file)
"""

import asyncio
import json
import ssl
import struct
import sys
import time

import aioice.ice

# aiortc gathers no loopback candidates by itself; the test runs on loopback only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

from aiortc import RTCPeerConnection, RTCSessionDescription, RTCConfiguration  # noqa: E402
from aiortc.sdp import candidate_from_sdp  # noqa: E402
import websockets  # noqa: E402

RAW, SYS, SYS_ADD_PEER, SYS_RELAY = 3, 7, 1, 3
NAME = "aiortc"


async def run(url: str, lobby: str, ca: str | None) -> dict:
    result = {"name": NAME, "id": 0, "echoes": {}, "relayTo": None, "relayFrom": None, "connectMs": None}
    done = asyncio.Event()
    channels = {}
    pc = None
    started = 0.0
    tls = ssl.create_default_context(cafile=ca) if url.startswith("wss:") else None
    async with websockets.connect(url, ssl=tls) as ws:
        async def signal(kind, dest, data=""):
            await ws.send(json.dumps({"type": kind, "id": dest, "data": data}))

        def finish():
            if len(result["echoes"]) == 4 and result["relayTo"] is not None and result["relayFrom"] is not None:
                done.set()

        def on_packet(label, b: bytes):
            if b[0] == RAW:
                payload = b[1:].decode()
                if payload == f"echo:{label}":
                    result["echoes"][label] = True
            elif b[0] == SYS and b[1] == SYS_ADD_PEER and len(b) >= 6:
                other = struct.unpack_from("<i", b, 2)[0]
                if result["relayTo"] is None:
                    body = f"relay from {NAME}".encode()
                    channels["reliable"].send(bytes([SYS, SYS_RELAY]) + struct.pack("<i", other) + bytes([RAW]) + body)
                    result["relayTo"] = other
            elif b[0] == SYS and b[1] == SYS_RELAY and len(b) >= 7 and b[6] == RAW:
                result["relayFrom"] = {"from": struct.unpack_from("<i", b, 2)[0], "text": b[7:].decode()}
            finish()

        async def connect():
            nonlocal pc, started
            started = time.monotonic()
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            specs = [
                ("reliable", dict(negotiated=True, id=1, ordered=True)),
                ("ordered", dict(negotiated=True, id=2, ordered=True, maxPacketLifeTime=1)),
                ("unreliable", dict(negotiated=True, id=3, ordered=False, maxPacketLifeTime=1)),
                ("4", dict(negotiated=True, id=4, ordered=True)),
            ]
            opened = []
            for label, options in specs:
                ch = pc.createDataChannel(label, **options)
                channels[label] = ch

                def on_open(label=label):
                    opened.append(label)
                    if len(opened) == len(specs):
                        result["connectMs"] = round((time.monotonic() - started) * 1000)
                        for name, c in channels.items():
                            c.send(bytes([RAW]) + f"echo:{name}".encode())

                def on_message(message, label=label):
                    on_packet(label, message if isinstance(message, bytes) else message.encode())

                ch.on("open", on_open)
                ch.on("message", on_message)
            await pc.setLocalDescription(await pc.createOffer())  # gathers; candidates in the SDP
            await signal(4, 1, pc.localDescription.sdp)

        async def read_signals():
            async for frame in ws:
                m = json.loads(frame)
                if m["type"] == 1:
                    result["id"] = m["id"]
                elif m["type"] == 2 and m["id"] == 1:
                    await connect()
                elif m["type"] == 5 and m["id"] == 1:
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=m["data"], type="answer"))
                elif m["type"] == 6 and m["id"] == 1:
                    mid, index, cand = [p for p in m["data"].split("\n") if p]
                    c = candidate_from_sdp(cand.split(":", 1)[1] if cand.startswith("candidate:") else cand)
                    c.sdpMid, c.sdpMLineIndex = mid, int(index)
                    await pc.addIceCandidate(c)

        await signal(0, 1, lobby)
        reader = asyncio.create_task(read_signals())
        try:
            await asyncio.wait_for(done.wait(), timeout=30)
        finally:
            reader.cancel()
        if pc is not None:
            await pc.close()
    return result


def main() -> int:
    url, lobby = sys.argv[1], sys.argv[2]
    ca = sys.argv[3] if len(sys.argv) > 3 else None
    t = time.monotonic()
    try:
        result = asyncio.run(asyncio.wait_for(run(url, lobby, ca), timeout=40))
    except Exception as e:  # noqa: BLE001 - report and fail
        print(f"aiortc: FAILED {type(e).__name__}: {e}", flush=True)
        return 1
    print(f"aiortc: joined and verified in {round((time.monotonic() - t) * 1000)} ms", flush=True)
    print(f"aiortc: {json.dumps(result)}", flush=True)
    ok = all(result["echoes"].get(l) for l in ("reliable", "ordered", "unreliable", "4")) and (
        result["relayFrom"] is not None
        and result["relayFrom"]["text"] == "relay from chromium"
        and result["relayFrom"]["from"] == result["relayTo"]
    )
    print("aiortc: OK" if ok else "aiortc: FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
