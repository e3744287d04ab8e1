// One node-datachannel (libdatachannel: what Godot's native webrtc-native uses) peer of the
// bulk-under-loss benchmark, the twin of rtcmesh's `bulk_peer` example: the same JSON lines on
// stdin/stdout, Godot's channel layout (negotiated channels 1-3), reliable messages on
// channel 1 as fast as the data channel's buffer allows.
//
// Usage: node peer.mjs <send|recv> <bind-ip> <size> <count>
// The sender offers, the receiver answers (as rtcmesh's ids decide).
import readline from 'node:readline';
import nodeDataChannel from 'node-datachannel';

const [role, bind, sizeArg, countArg] = process.argv.slice(2);
const size = Number(sizeArg);
const count = Number(countArg);
const sender = role === 'send';
const say = (v) => process.stdout.write(JSON.stringify(v) + '\n');
setTimeout(() => { console.error('bulk peer: time limit'); process.exit(1); }, 120_000).unref();

const pc = new nodeDataChannel.PeerConnection(`bulk-${role}`, {
  iceServers: [],
  bindAddress: bind,
  enableIceUdpMux: false,
  // The sender offers and the receiver answers, explicitly (not on channel creation).
  disableAutoNegotiation: true,
});
let mid = '0';
pc.onLocalDescription((sdp, type) => {
  const m = sdp.match(/^a=mid:(\S+)/m);
  if (m) mid = m[1];
  say({ type: type.toLowerCase(), sdp });
});
pc.onLocalCandidate((candidate) => say({ type: 'candidate', candidate: candidate.replace(/^a=/, ''), mid }));

// Godot's layout: 1 reliable, 2 ordered with a 1 ms lifetime, 3 unordered with a 1 ms lifetime.
const reliable = pc.createDataChannel('reliable', { negotiated: true, id: 1 });
pc.createDataChannel('ordered', { negotiated: true, id: 2, maxPacketLifeTime: 1 });
pc.createDataChannel('unreliable', { negotiated: true, id: 3, unordered: true, maxPacketLifeTime: 1 });

let open = false;
let started = null;
let stopped = false;
let sent = 0;
let received = 0;
let bytes = 0;
let last = null;
const payload = Buffer.alloc(size, 0x42);
// Keep about 1 MiB queued in libdatachannel (what rtcmesh's queue holds by default).
const HIGH = 1024 * 1024;
reliable.setBufferedAmountLowThreshold(HIGH / 2);

function pump() {
  if (!sender || !open || started === null || stopped) return;
  while (sent < count && reliable.bufferedAmount() < HIGH) {
    let ok = false;
    try { ok = reliable.sendMessageBinary(payload); } catch { stopped = true; }
    if (!ok) break;
    sent += 1;
  }
  if (sent === count) {
    say({ type: 'sent', messages: sent });
    stopped = true;
  }
}
reliable.onBufferedAmountLow(() => pump());
// Also poll: the low-buffer callback alone is not enough to keep the sender going.
setInterval(pump, 2).unref();

function report() {
  const seconds = started !== null && last !== null ? Number(last - started) / 1e9 : 0;
  say({ type: 'result', messages: received, bytes, seconds });
  finish();
}
function finish() {
  stopped = true;
  setTimeout(() => { pc.close(); nodeDataChannel.cleanup(); process.exit(0); }, 100);
}

reliable.onOpen(() => {
  open = true;
  say({ type: 'open' });
  pump();
});
reliable.onMessage((msg) => {
  received += 1;
  bytes += msg.length;
  last = process.hrtime.bigint();
  if (!sender && received >= count) report();
});

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const v = JSON.parse(line);
  switch (v.type) {
    case 'offer':
      pc.setRemoteDescription(v.sdp, 'offer');
      pc.setLocalDescription();
      break;
    case 'answer':
      pc.setRemoteDescription(v.sdp, 'answer');
      break;
    case 'candidate':
      if (v.candidate) pc.addRemoteCandidate(v.candidate, v.mid ?? '0');
      break;
    case 'start':
      started = process.hrtime.bigint();
      pump();
      break;
    case 'stop':
      if (sender) {
        if (!stopped) say({ type: 'sent', messages: sent });
        stopped = true;
        finish();
      } else {
        report();
      }
      break;
  }
});
lines.on('close', () => finish());

// The offering side starts negotiation; the answerer waits for the offer.
if (sender) pc.setLocalDescription();
