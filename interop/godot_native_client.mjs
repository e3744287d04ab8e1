// node-datachannel (libdatachannel: the WebRTC stack of Godot's native webrtc extension) joins
// an rtcmesh server's lobby as a Godot native client would, many times in a row: the
// webrtc_signaling demo's protocol, WebRTCMultiplayerPeer's negotiated channels (1, 2, 3 and
// one extra, 4), candidates trickled as Godot sends them, SceneMultiplayer's RAW bytes. Each
// join offers (the client's id is the larger), waits for the echo of one packet on every
// channel, then leaves; the next starts at once. Prints one line per failed join (with
// libdatachannel's warnings) and a summary; exits 1 if any join failed.
//
// Usage: node --experimental-websocket godot_native_client.mjs <wss-url> <lobby> <joins> [seconds per join]
// (NODE_EXTRA_CA_CERTS=<cert.pem> makes Node trust the server's certificate.)
import nodeDataChannel from 'node-datachannel';

const [url, lobby, joinsArg, secondsArg] = process.argv.slice(2);
const joins = Number(joinsArg);
const perJoin = Number(secondsArg || 10) * 1000;
const RAW = 3;
const LABELS = ['reliable', 'ordered', 'unreliable', '4'];

// libdatachannel's own log, kept per join and shown for a join that failed.
let log = [];
nodeDataChannel.initLogger(process.env.NDC_LOG || 'Warning', (level, message) => log.push(`${level}: ${message}`));

function join(n) {
  return new Promise((resolve) => {
    const started = Date.now();
    const events = [];
    let pc = null;
    let ws = null;
    let finished = false;
    const echoed = new Set();
    const finish = (ok, why) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      try { pc?.close(); } catch {}
      try { ws?.close(); } catch {}
      resolve({ ok, why, ms: Date.now() - started, events });
    };
    const timer = setTimeout(() => finish(false, `no echo on every channel within ${perJoin} ms`), perJoin);
    const at = (what) => events.push(`${Date.now() - started} ms ${what}`);
    ws = new WebSocket(url);
    const signal = (type, id, data = '') => ws.send(JSON.stringify({ type, id, data }));
    ws.onerror = (e) => finish(false, `signaling error ${e.message || e.type}`);
    ws.onclose = (e) => { if (!finished) finish(false, `signaling closed ${e.code} ${e.reason}`); };
    ws.onopen = () => signal(0, 1, lobby);
    ws.onmessage = (frame) => {
      const m = JSON.parse(frame.data);
      if (m.type !== 6) at(`signal ${m.type} from ${m.id}`);
      if (m.type === 2 && m.id === 1) {
        at('host announced: offering');
        pc = new nodeDataChannel.PeerConnection(`godot-native-${n}`, {
          iceServers: [],
          bindAddress: '127.0.0.1',
          enableIceUdpMux: false,
          disableAutoNegotiation: true,
        });
        pc.onStateChange((s) => at(`state ${s}`));
        pc.onIceStateChange((s) => at(`ice ${s}`));
        pc.onGatheringStateChange((s) => at(`gathering ${s}`));
        pc.onLocalDescription((sdp, type) => {
          at(`local ${type} sent`);
          signal(type.toLowerCase() === 'offer' ? 4 : 5, 1, sdp);
        });
        // Godot's demo sends "mid\nindex\ncandidate".
        pc.onLocalCandidate((candidate, mid) => signal(6, 1, `${mid}\n0\n${candidate.replace(/^a=/, '')}`));
        const specs = [
          { negotiated: true, id: 1 },
          { negotiated: true, id: 2, maxPacketLifeTime: 1 },
          { negotiated: true, id: 3, unordered: true, maxPacketLifeTime: 1 },
          { negotiated: true, id: 4 },
        ];
        LABELS.forEach((label, i) => {
          const ch = pc.createDataChannel(label, specs[i]);
          ch.onOpen(() => {
            at(`${label} open`);
            ch.sendMessageBinary(Buffer.concat([Buffer.from([RAW]), Buffer.from(`echo:${label}`)]));
          });
          ch.onMessage((msg) => {
            const b = Buffer.isBuffer(msg) ? msg : Buffer.from(msg);
            if (b[0] === RAW && b.subarray(1).toString() === `echo:${label}`) {
              echoed.add(label);
              if (echoed.size === LABELS.length) finish(true);
            }
          });
        });
        pc.setLocalDescription('offer');
      } else if (m.type === 5 && m.id === 1) {
        at('answer received');
        try {
          pc.setRemoteDescription(m.data, 'answer');
        } catch (e) {
          finish(false, `the answer was refused: ${e.message}`);
        }
      } else if (m.type === 6 && m.id === 1) {
        const [mid, , candidate] = m.data.split('\n');
        at(`candidate received: ${candidate}`);
        try {
          pc.addRemoteCandidate(candidate, mid);
        } catch (e) {
          finish(false, `a candidate was refused: ${e.message}`);
        }
      }
    };
  });
}

let failed = 0;
const times = [];
const t0 = Date.now();
for (let n = 1; n <= joins; n += 1) {
  log = [];
  const r = await join(n);
  if (r.ok) {
    times.push(r.ms);
  } else {
    failed += 1;
    console.log(`godot-native: join ${n} FAILED: ${r.why}`);
    for (const e of r.events) console.log(`  ${e}`);
    for (const l of log.slice(-(Number(process.env.NDC_LOG_LINES) || 20))) console.log(`  libdatachannel ${l}`);
  }
}
times.sort((a, b) => a - b);
const median = times.length ? times[Math.floor(times.length / 2)] : 0;
console.log(`godot-native: ${joins - failed}/${joins} joins echoed on all four channels, ${failed} failed `
  + `(median ${median} ms, slowest ${times.at(-1) ?? 0} ms; ${Date.now() - t0} ms in all; libdatachannel ${nodeDataChannel.getLibraryVersion?.() ?? '?'})`);
nodeDataChannel.cleanup();
process.exit(failed === 0 ? 0 : 1);
