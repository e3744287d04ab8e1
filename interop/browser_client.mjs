// Headless Chromium (Debian's /usr/bin/chromium, never a downloaded build) joins an rtcmesh
// server's lobby as a Godot web client would. Usage: node browser_client.mjs <ws-url> <lobby>
import { chromium } from "playwright-core";
import http from "node:http";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const [url, lobby] = process.argv.slice(2);
const page_html = fs.readFileSync(new URL("./client.html", import.meta.url));
const server = http.createServer((_, res) => { res.writeHead(200, { "content-type": "text/html" }); res.end(page_html); });
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

// Loopback WebRTC needs both flags: without them Chromium hides host addresses behind mDNS
// names and never uses loopback, and gathering never completes.
const args = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
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
  // Chromium also restarts ICE mid-stream (see client.html).
  const result = await page.evaluate(([u, l]) => window.runClient(u, l, "chromium", true), [url, lobby]);
  console.log(`chromium: launch ${started - launched} ms; joined and verified in ${Date.now() - started} ms`);
  console.log(`chromium: ${JSON.stringify(result)}`);
  const r = result.restart;
  const restarted = r && r.offers >= 1 && r.answered && r.ufragAfter && r.ufragAfter !== r.ufragBefore
    && r.echoed === r.sent && r.inOrder;
  console.log(restarted
    ? `chromium: restartIce() mid-stream: answered in ${r.restartMs} ms, ${r.echoed} reliable echoes in order, ICE states: ${r.states}`
    : "chromium: ICE restart FAILED");
  const ok = ["reliable", "ordered", "unreliable", "4"].every((l) => result.echoes[l])
    && result.relayFrom && result.relayFrom.text === "relay from aiortc" && result.relayFrom.from === result.relayTo
    && restarted;
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
