// Headless Chromium (Debian's /usr/bin/chromium, never a downloaded build) joins an rtcmesh
// server's lobby as a Godot web client would, from a page served over HTTPS (a Godot web
// export on an https:// site may only open wss:// signaling).
// Usage: node browser_client.mjs <wss-url> <lobby> <cert.pem> <key.pem>
// With an RTCPeerConnection configuration (the NAT lab passes a TURN server and
// iceTransportPolicy "relay") the client is alone: it checks the four echoes and that the
// selected candidate pair is relayed on its side, instead of relaying to another client.
// Otherwise Chromium also restarts ICE mid-stream (see client.html).
// RTCMESH_TRUST_CERT=<pem> makes Chromium trust one more certificate by its key's hash (the
// NAT lab's TURN-over-TLS server). The result line includes the offer's host candidates
// (`hostCandidates`, the NAT lab checks they are mDNS names).
import { chromium } from "playwright-core";
import crypto from "node:crypto";
import https from "node:https";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const [url, lobby, certFile, keyFile, rtcJson] = process.argv.slice(2);
const rtcConfig = rtcJson ? JSON.parse(rtcJson) : { iceServers: [] };
const alone = Boolean(rtcJson);
const page_html = fs.readFileSync(new URL("./client.html", import.meta.url));
const cert = fs.readFileSync(certFile), key = fs.readFileSync(keyFile);
const server = https.createServer({ cert, key }, (_, res) => { res.writeHead(200, { "content-type": "text/html" }); res.end(page_html); });
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const pageUrl = `https://127.0.0.1:${server.address().port}/`;
// Chromium trusts the test's self-signed certificate (page and wss://) by its key's hash only.
const spkiHashOf = (pem) => crypto.createHash("sha256")
  .update(new crypto.X509Certificate(pem).publicKey.export({ type: "spki", format: "der" }))
  .digest("base64");
const trusted = [spkiHashOf(cert)];
if (process.env.RTCMESH_TRUST_CERT) trusted.push(spkiHashOf(fs.readFileSync(process.env.RTCMESH_TRUST_CERT)));
const spkiHash = trusted.join(",");

// Loopback WebRTC needs both flags: without them Chromium hides host addresses behind mDNS
// names and never uses loopback, and gathering never completes. RTCMESH_CHROMIUM_MDNS=1 keeps
// Chromium's default instead (the NAT lab's LAN: host candidates are `<uuid>.local` names that
// Chromium answers for on the LAN).
const mdns = process.env.RTCMESH_CHROMIUM_MDNS === "1";
const args = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--allow-loopback-in-peer-connection",
  ...(mdns ? [] : ["--disable-features=WebRtcHideLocalIpsWithMdns"]),
  `--ignore-certificate-errors-spki-list=${spkiHash}`,
];
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "rtcmesh-chromium-"));
let code = 1;
const launched = Date.now();
try {
  const context = await chromium.launchPersistentContext(profile, { executablePath: "/usr/bin/chromium", headless: true, args });
  const page = await context.newPage();
  page.on("console", (m) => console.log(`[page] ${m.text()}`));
  await page.goto(pageUrl);
  const started = Date.now();
  const result = await page.evaluate(([u, l, c, r]) => window.runClient(u, l, "chromium", c, r, r), [url, lobby, rtcConfig, !alone]);
  console.log(`chromium: launch ${started - launched} ms; joined and verified in ${Date.now() - started} ms`);
  console.log(`chromium: ${JSON.stringify(result)}`);
  const r = result.restart;
  const restarted = r && r.offers >= 1 && r.answered && r.ufragAfter && r.ufragAfter !== r.ufragBefore
    && r.echoed === r.sent && r.inOrder;
  if (!alone) {
    console.log(restarted
      ? `chromium: restartIce() mid-stream: answered in ${r.restartMs} ms, ${r.echoed} reliable echoes in order, ICE states: ${r.states}`
      : "chromium: ICE restart FAILED");
  }
  const echoed = ["reliable", "ordered", "unreliable", "4"].every((l) => result.echoes[l]);
  const secure = result.page === "https:" && result.signaling.startsWith("wss://");
  const ok = secure && (alone
    ? echoed && result.pair !== null
      && (rtcConfig.iceTransportPolicy !== "relay" || result.pair.local === "relay")
    : echoed && result.relayFrom && result.relayFrom.text === "relay from aiortc" && result.relayFrom.from === result.relayTo
      && restarted);
  code = ok ? 0 : 1;
  console.log(ok ? "chromium: OK" : "chromium: FAILED");
  await context.close();
} catch (e) {
  console.log(`chromium: FAILED ${e}`);
} finally {
  server.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
