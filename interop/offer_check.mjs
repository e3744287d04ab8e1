// Chromium and node-datachannel (libdatachannel) accept an offer made by rtcmesh unchanged: it
// carries rtcmesh's session-level attributes (a=x-rtcmesh-channels, a=x-rtcmesh-reliable),
// which RFC 8866 says a receiver ignores. Each stack applies it as the remote description and
// answers; the answer must not echo them (so rtcmesh never agrees on its own retransmission,
// or states a layout, with a browser or Godot peer).
// Usage: node offer_check.mjs <offer.sdp>
import { chromium } from "playwright-core";
import nodeDataChannel from "node-datachannel";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const offer = fs.readFileSync(process.argv[2], "utf8");
if (!offer.includes("a=x-rtcmesh-reliable:1")) {
  console.log("offer check: the rtcmesh offer lacks a=x-rtcmesh-reliable:1");
  process.exit(1);
}
let ok = true;
const verdict = (name, answer, error) => {
  const echoed = answer && answer.includes("x-rtcmesh");
  const good = answer && answer.includes("m=application") && !echoed;
  console.log(`offer check: ${name} ${good ? "answered the rtcmesh offer, without rtcmesh's attributes" : `FAILED: ${error ?? (echoed ? "the answer echoes an x-rtcmesh attribute" : "no answer")}`}`);
  ok &&= Boolean(good);
};

// node-datachannel: the offer as the remote description; its answer comes back by callback.
try {
  const answer = await new Promise((resolve, reject) => {
    const pc = new nodeDataChannel.PeerConnection("offer-check", { iceServers: [] });
    const timer = setTimeout(() => reject(new Error("no answer within 5 s")), 5000);
    pc.onLocalDescription((sdp, type) => {
      if (type === "answer") { clearTimeout(timer); pc.close(); resolve(sdp); }
    });
    pc.setRemoteDescription(offer, "offer");
  });
  verdict(`node-datachannel (libdatachannel ${nodeDataChannel.getLibraryVersion?.() ?? "?"})`, answer);
} catch (e) {
  verdict("node-datachannel", null, String(e));
}
nodeDataChannel.cleanup();

// Chromium: setRemoteDescription, createAnswer, setLocalDescription in a blank page.
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "rtcmesh-offer-check-"));
try {
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
  const page = await context.newPage();
  const answer = await page.evaluate(async (sdp) => {
    const pc = new RTCPeerConnection();
    await pc.setRemoteDescription({ type: "offer", sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    pc.close();
    return answer.sdp;
  }, offer);
  verdict("chromium", answer);
  await context.close();
} catch (e) {
  verdict("chromium", null, String(e).split("\n")[0]);
} finally {
  fs.rmSync(profile, { recursive: true, force: true });
}
process.exit(ok ? 0 : 1);
