// Headless Chromium (Debian's /usr/bin/chromium, never a downloaded build) joins an rtcmesh
// server's lobby as a Godot web client would, from a page served over HTTPS (a Godot web
// export on an https:// site may only open wss:// signaling).
// Usage: node browser_client.mjs <wss-url> <lobby> <cert.pem> <key.pem>
import { chromium } from "playwright-core";
import crypto from "node:crypto";
import https from "node:https";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const [url, lobby, certFile, keyFile] = process.argv.slice(2);
const page_html = fs.readFileSync(new URL("./client.html", import.meta.url));
const cert = fs.readFileSync(certFile), key = fs.readFileSync(keyFile);
const server = https.createServer({ cert, key }, (_, res) => { res.writeHead(200, { "content-type": "text/html" }); res.end(page_html); });
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const pageUrl = `https://127.0.0.1:${server.address().port}/`;
// Chromium trusts the test's self-signed certificate (page and wss://) by its key's hash only.
const spki = new crypto.X509Certificate(cert).publicKey.export({ type: "spki", format: "der" });
const spkiHash = crypto.createHash("sha256").update(spki).digest("base64");

// Loopback WebRTC needs both flags: without them Chromium hides host addresses behind mDNS
// names and never uses loopback, and gathering never completes.
const args = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
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
  const result = await page.evaluate(([u, l]) => window.runClient(u, l, "chromium"), [url, lobby]);
  console.log(`chromium: launch ${started - launched} ms; joined and verified in ${Date.now() - started} ms`);
  console.log(`chromium: ${JSON.stringify(result)}`);
  const ok = result.page === "https:" && result.signaling.startsWith("wss://")
    && ["reliable", "ordered", "unreliable", "4"].every((l) => result.echoes[l])
    && result.relayFrom && result.relayFrom.text === "relay from aiortc" && result.relayFrom.from === result.relayTo;
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
