"""aiortc accepts an offer made by rtcmesh unchanged: it carries rtcmesh's session-level
attributes (a=x-rtcmesh-channels, a=x-rtcmesh-reliable), which RFC 8866 says a receiver ignores.
aiortc applies it as the remote description and answers; the answer must not echo them.

Usage: python3 offer_check.py <offer.sdp>
"""

import asyncio
import sys

from aiortc import RTCPeerConnection, RTCSessionDescription


async def answer(sdp: str) -> str:
    pc = RTCPeerConnection()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        offer = f.read()
    try:
        sdp = asyncio.run(asyncio.wait_for(answer(offer), 10))
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        print(f"offer check: aiortc FAILED: {e!r}")
        return 1
    if "m=application" not in sdp or "x-rtcmesh" in sdp:
        print("offer check: aiortc FAILED: the answer lacks the data section or echoes x-rtcmesh")
        return 1
    print("offer check: aiortc answered the rtcmesh offer, without rtcmesh's attributes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
