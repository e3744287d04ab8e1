// The bulk-under-loss benchmark's driver (run by run.sh inside a private network namespace):
// for each loss rate, each pair of stacks transfers reliable messages of one size from a
// sender to a receiver as fast as they go, and the receiver's rate is reported:
//   rtcmesh -> libdatachannel, libdatachannel -> libdatachannel (the same receiver),
//   libdatachannel -> rtcmesh, and rtcmesh -> rtcmesh, with rtcmesh's own retransmission (agreed
//   between two rtcmesh peers) and without it (RTCMESH_OWN_RETRANSMISSION=0: SCTP's).
// Loss is random, in the kernel (nftables' numgen on every UDP datagram sent, both ways),
// switched on once both ends are connected.
//
// Usage: node bulk.mjs <rtcmesh bulk_peer binary> <size> <count> <seconds per transfer> <runs> <loss %>...
import { spawn, execFileSync } from 'node:child_process';
import readline from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [rtcmeshBin, sizeArg, countArg, secondsArg, runsArg, ...losses] = process.argv.slice(2);
const size = Number(sizeArg);
const count = Number(countArg);
const seconds = Number(secondsArg);
const runs = Number(runsArg);
const SENDER_IP = '10.252.0.1';
const RECEIVER_IP = '10.252.0.2';

function nft(...args) {
  execFileSync('nft', args, { stdio: 'inherit' });
}
function setLoss(percent) {
  nft('flush', 'chain', 'inet', 'bulk', 'out');
  if (percent > 0) {
    const permille = Math.round(percent * 10);
    nft('add', 'rule', 'inet', 'bulk', 'out', 'meta', 'l4proto', 'udp', 'numgen', 'random', 'mod', '1000', 'lt', String(permille), 'drop');
  }
}

function peer(stack, role) {
  const ip = role === 'send' ? SENDER_IP : RECEIVER_IP;
  const args = [role, ip, String(size), String(count)];
  const env = { ...process.env, RTCMESH_OWN_RETRANSMISSION: stack === 'rtcmesh-sctp' ? '0' : '1' };
  const child = stack.startsWith('rtcmesh')
    ? spawn(rtcmeshBin, args, { stdio: ['pipe', 'pipe', 'pipe'], env })
    : spawn(process.execPath, [path.join(here, 'peer.mjs'), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stderr.on('data', (d) => { child.errors = (child.errors ?? '') + d; });
  child.lines = readline.createInterface({ input: child.stdout });
  child.send = (v) => { if (child.stdin.writable) child.stdin.write(JSON.stringify(v) + '\n'); };
  return child;
}

// One transfer; resolves to { messages, bytes, seconds } from the receiver, or an error.
function transfer(from, to, loss) {
  return new Promise((resolve) => {
    const s = peer(from, 'send');
    const r = peer(to, 'recv');
    const opened = new Set();
    let result = null;
    let done = false;
    const end = (outcome) => {
      if (done) return;
      done = true;
      clearTimeout(connectTimer);
      clearTimeout(transferTimer);
      setLoss(0);
      for (const c of [s, r]) { c.stdin.end(); setTimeout(() => c.kill('SIGKILL'), 2000).unref(); }
      resolve(outcome);
    };
    const connectTimer = setTimeout(() => end({ error: `no connection within 20 s ${(s.errors ?? '') + (r.errors ?? '')}` }), 20_000);
    let transferTimer = null;
    const relay = (a, b, name) => a.lines.on('line', (line) => {
      let v;
      try { v = JSON.parse(line); } catch { return; }
      if (v.type === 'offer' || v.type === 'answer' || v.type === 'candidate') b.send(v);
      if (v.type === 'open') {
        opened.add(name);
        if (opened.size === 2) {
          clearTimeout(connectTimer);
          setLoss(loss);
          for (const c of [s, r]) c.send({ type: 'start' });
          transferTimer = setTimeout(() => {
            for (const c of [s, r]) c.send({ type: 'stop' });
            transferTimer = setTimeout(() => end(result ?? { error: 'no result' }), 5000);
          }, seconds * 1000);
        }
      }
      if (v.type === 'result') { result = v; end(v); }
    });
    relay(s, r, 'send');
    relay(r, s, 'recv');
    for (const c of [s, r]) c.on('exit', (code) => { if (code && !done) end({ error: `${c === s ? from + ' sender' : to + ' receiver'} exited ${code}: ${(c.errors ?? '').trim().split('\n').pop()}` }); });
  });
}

nft('add', 'table', 'inet', 'bulk');
nft('add', 'chain', 'inet', 'bulk', 'out', '{ type filter hook output priority 0; policy accept; }');

const pairs = [['rtcmesh', 'ndc'], ['ndc', 'ndc'], ['ndc', 'rtcmesh'], ['rtcmesh', 'rtcmesh'], ['rtcmesh-sctp', 'rtcmesh-sctp']];
const name = (s) => ({ ndc: 'libdatachannel', rtcmesh: 'rtcmesh', 'rtcmesh-sctp': 'rtcmesh (own retransmission off)' })[s];
console.log(`| loss | sender → receiver | ${size} B msg/s: median of ${runs} (min–max) | MB/s | delivered in ${seconds} s |`);
console.log('|---|---|---|---|---|');
let failed = false;
const retries = [];
for (const loss of losses.map(Number)) {
  const medians = {};
  for (const [from, to] of pairs) {
    const rates = [];
    const delivered = [];
    const errors = [];
    for (let i = 0; i < runs; i++) {
      // A connection that never opens is retried (twice at most) and reported: it is an
      // interop fault of its own, not a figure of this benchmark.
      let r = await transfer(from, to, loss);
      for (let retry = 0; r.error && r.error.startsWith('no connection') && retry < 2; retry++) {
        retries.push(`${name(from)} → ${name(to)}: ${r.error.split('\n')[0]}`);
        r = await transfer(from, to, loss);
      }
      if (r.error) { errors.push(r.error); continue; }
      rates.push(r.seconds > 0 ? r.messages / r.seconds : 0);
      delivered.push(r.messages);
    }
    rates.sort((a, b) => a - b);
    const median = rates.length ? rates[Math.floor(rates.length / 2)] : NaN;
    medians[`${from}>${to}`] = median;
    console.log(`| ${loss} % | ${name(from)} → ${name(to)} | ${median.toFixed(0)} (${rates.length ? rates[0].toFixed(0) : '—'}–${rates.length ? rates[rates.length - 1].toFixed(0) : '—'}) | ${(median * size / 1e6).toFixed(2)} | ${delivered.join(', ')} of ${count} |${errors.length ? ' errors: ' + errors.join('; ') : ''}`);
    if (errors.length) failed = true;
  }
  console.log(`| ${loss} % | rtcmesh sending ÷ libdatachannel sending, same receiver | **${(medians['rtcmesh>ndc'] / medians['ndc>ndc']).toFixed(2)}×** | | |`);
  console.log(`| ${loss} % | rtcmesh → rtcmesh ÷ libdatachannel → libdatachannel | **${(medians['rtcmesh>rtcmesh'] / medians['ndc>ndc']).toFixed(2)}×** (own retransmission off: ${(medians['rtcmesh-sctp>rtcmesh-sctp'] / medians['ndc>ndc']).toFixed(2)}×) | | |`);
}
nft('delete', 'table', 'inet', 'bulk');
if (retries.length) console.log(`connections retried (never opened within 20 s): ${retries.length}\n- ${retries.join('\n- ')}`);
process.exit(failed ? 1 : 0);
