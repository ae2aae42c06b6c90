// Signaling load generator: N peers on raw websockets speaking engine.io v4 / socket.io v5 frames
// (cheaper per message than socket.io-client, so the generator is not the bottleneck).
//   node loadgen.mjs '{"url":"http://127.0.0.1:8000","peers":50,"room":"bench","token":"…"}'
// Prints "PHASE <name>" lines as it goes (run.py samples the server then) and "RESULT {json}".
import WebSocket from "ws";

const cfg = {
  peers: 50,
  room: "bench",
  token: "",
  connectConcurrency: 50,
  relaySeconds: 10,
  inFlight: 100, // probes in flight across all peers during the relay (throughput) phase
  latencySeconds: 8,
  latencyRate: 2000, // round trips per second offered across all peers during the latency phase
  fanoutSeconds: 10,
  statusEveryMs: 2000,
  stateEvery: 5, // one status in this many changes the peer's state
  settleMs: 2000,
  holdSeconds: 0, // > 0: connect, hold that long, leave; no relay or fan-out
  ...JSON.parse(process.argv[2] ?? "{}"),
};
const wsUrl = cfg.url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
const CANDIDATE = "candidate:842163049 1 udp 1677729535 192.0.2.10 53421 typ srflx raddr 10.0.0.5 rport 53421 generation 0 network-cost 999";
const SIGNAL_HEAD = '42["signal",{"to":"';
const SIGNAL_MIDDLE = `","kind":"candidate","data":{"candidate":"${CANDIDATE}","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"`;
const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function quantile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const stats = {
  phase: "connect",
  relayCounting: false,
  relayed: 0,
  rtts: [],
  latencyCounting: false,
  latencyRtts: [],
  fanoutCounting: false,
  fanoutMsgs: 0,
  fanoutEntries: 0,
  presenceDelays: [],
  stateDelays: [],
  errors: {},
  fanoutStart: 0,
};

class Peer {
  constructor(index) {
    this.index = index;
    this.peerId = null;
    this.partner = null;
    this.relaying = false;
    this.state = "idle"; // as joined
    this.sent = index % cfg.stateEvery; // peers change state in turns, not all in the same round
  }

  connect() {
    return new Promise((resolve, reject) => {
      const started = now();
      const ws = new WebSocket(wsUrl, { headers: { Authorization: `Bearer ${cfg.token}` }, perMessageDeflate: false });
      this.ws = ws;
      ws.on("error", reject);
      ws.on("close", () => {
        if (!this.peerId) reject(new Error("closed before join"));
      });
      ws.on("message", (raw) => {
        const msg = raw.toString();
        if (msg === "2") return ws.send("3");
        if (msg.startsWith('42["signal"')) return this.onSignal(msg);
        if (msg.startsWith("42")) return this.onEvent(JSON.parse(msg.slice(2)));
        if (msg.startsWith("430")) {
          const ack = JSON.parse(msg.slice(3))[0];
          if (!ack.peer_id) return reject(new Error(JSON.stringify(ack)));
          this.peerId = ack.peer_id;
          resolve(now() - started);
        } else if (msg.startsWith("40")) {
          ws.send('420["join_room",' + JSON.stringify({ room: cfg.room, capabilities: { backend: "wasm", models_warm: ["tiny-gpt2"] } }) + "]");
        } else if (msg.startsWith("44")) {
          reject(new Error(`refused: ${msg}`));
        } else if (msg[0] === "0") {
          ws.send("40");
        }
      });
    });
  }

  // The relay's messages are read by position, not parsed: the generator must stay cheaper than
  // the servers it drives (both servers forward `data` with its keys in the order sent).
  onSignal(msg) {
    const at = msg.indexOf('"from":"') + 8;
    const tagAt = msg.indexOf('"usernameFragment":"', at) + 20;
    if (at < 8 || tagAt < 20) return this.onEvent(JSON.parse(msg.slice(2)));
    this.onProbe(msg.slice(at, msg.indexOf('"', at)), msg.slice(tagAt, msg.indexOf('"', tagAt)));
  }

  onProbe(from, tag) {
    if (stats.relayCounting) stats.relayed++;
    if (tag[0] === "q") {
      this.send(from, "r" + tag.slice(1));
    } else if (this.relaying) {
      if (stats.relayCounting) stats.rtts.push(now() - Number(tag.slice(1)));
      this.probe();
    } else if (stats.latencyCounting) {
      stats.latencyRtts.push(now() - Number(tag.slice(1)));
    }
  }

  onEvent([event, payload]) {
    if (event === "signal") {
      this.onProbe(payload.from, payload.data.usernameFragment);
    } else if (event === "peer_updated") {
      if (!stats.fanoutCounting) return;
      stats.fanoutMsgs++;
      stats.fanoutEntries += payload.peers.length;
      const t = now() - stats.fanoutStart;
      for (const p of payload.peers) {
        if (p.queue === 7) stats.presenceDelays.push(t - p.tok_s);
        else if (p.queue === 8) stats.stateDelays.push(t - p.tok_s);
      }
    } else if (event === "error") {
      stats.errors[payload.code] = (stats.errors[payload.code] ?? 0) + 1;
    }
  }

  send(to, tag) {
    this.ws.send(SIGNAL_HEAD + to + SIGNAL_MIDDLE + tag + '"}}]');
  }

  probe() {
    this.send(this.partner.peerId, "q" + now());
  }

  // Every `stateEvery`-th status changes the peer's state (idle <-> busy) and is marked queue 8;
  // the others change only tok_s (the bulk, queue 7). The receivers time the two kinds apart.
  status() {
    this.sent += 1;
    const changed = this.sent % cfg.stateEvery === 0;
    if (changed) this.state = this.state === "busy" ? "idle" : "busy";
    const update = { state: this.state, backend: "wasm", models_warm: ["tiny-gpt2"], queue: changed ? 8 : 7, tok_s: now() - stats.fanoutStart };
    this.ws.send('42["status",' + JSON.stringify(update) + "]");
  }
}

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function main() {
  const peers = Array.from({ length: cfg.peers }, (_, i) => new Peer(i));
  console.log("PHASE connect_start");
  const t0 = now();
  const latencies = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(cfg.connectConcurrency, peers.length) }, async () => {
      while (next < peers.length) {
        const peer = peers[next++];
        latencies.push(await peer.connect());
      }
    }),
  );
  const connectWall = now() - t0;
  latencies.sort((a, b) => a - b);
  await sleep(cfg.settleMs);
  console.log("PHASE connected");
  if (cfg.holdSeconds) {
    // Memory probes: keep the peers connected and idle for a while, then leave.
    await sleep(cfg.holdSeconds * 1000);
    for (const p of peers) p.ws.close();
    console.log("RESULT " + JSON.stringify({ peers: cfg.peers, connect_wall_ms: connectWall }));
    await sleep(200);
    process.exit(0);
  }

  for (let i = 0; i + 1 < peers.length; i += 2) {
    peers[i].partner = peers[i + 1];
    peers[i + 1].partner = peers[i];
  }
  const senders = peers.filter((p) => p.partner);
  const perPeer = Math.max(1, Math.round(cfg.inFlight / senders.length));
  console.log("PHASE relay_start");
  for (const p of senders) {
    p.relaying = true;
    for (let k = 0; k < perPeer; k++) p.probe();
  }
  await sleep(1000); // warm up before counting
  let cpu = cpuSeconds();
  stats.relayCounting = true;
  const relayStart = now();
  await sleep(cfg.relaySeconds * 1000);
  stats.relayCounting = false;
  const relayElapsed = (now() - relayStart) / 1000;
  const relayCpu = (cpuSeconds() - cpu) / relayElapsed;
  console.log("PHASE relay_end");
  for (const p of senders) p.relaying = false;
  await sleep(1000); // let the probes in flight drain

  // Latency at a fixed offered load (open loop), below every server's capacity.
  console.log("PHASE latency_start");
  let turn = 0;
  const perTick = cfg.latencyRate / 100;
  let owed = 0;
  const ticker = setInterval(() => {
    for (owed += perTick; owed >= 1; owed--) senders[turn++ % senders.length].probe();
  }, 10);
  await sleep(1000);
  stats.latencyCounting = true;
  await sleep(cfg.latencySeconds * 1000);
  clearInterval(ticker);
  await sleep(500); // answers to the last probes
  stats.latencyCounting = false;
  console.log("PHASE latency_end");

  console.log("PHASE fanout_start");
  stats.fanoutStart = now();
  const timers = peers.map((p) =>
    setTimeout(() => {
      p.status();
      p.timer = setInterval(() => p.status(), cfg.statusEveryMs);
    }, Math.random() * cfg.statusEveryMs),
  );
  await sleep(cfg.statusEveryMs); // every peer has started
  cpu = cpuSeconds();
  stats.fanoutCounting = true;
  const fanStart = now();
  await sleep(cfg.fanoutSeconds * 1000);
  stats.fanoutCounting = false;
  const fanElapsed = (now() - fanStart) / 1000;
  const fanCpu = (cpuSeconds() - cpu) / fanElapsed;
  console.log("PHASE fanout_end");
  timers.forEach(clearTimeout);
  peers.forEach((p) => clearInterval(p.timer));
  for (const p of peers) p.ws.close();

  stats.rtts.sort((a, b) => a - b);
  stats.latencyRtts.sort((a, b) => a - b);
  stats.presenceDelays.sort((a, b) => a - b);
  stats.stateDelays.sort((a, b) => a - b);
  const result = {
    peers: cfg.peers,
    connect_wall_ms: connectWall,
    connect_p50_ms: quantile(latencies, 0.5),
    connect_p99_ms: quantile(latencies, 0.99),
    relay_msgs_per_s: stats.relayed / relayElapsed,
    relay_rtt_p50_ms: quantile(stats.rtts, 0.5),
    relay_rtt_p99_ms: quantile(stats.rtts, 0.99),
    relay_in_flight: perPeer * senders.length,
    latency_rate: cfg.latencyRate * 2,
    latency_rtt_p50_ms: quantile(stats.latencyRtts, 0.5),
    latency_rtt_p99_ms: quantile(stats.latencyRtts, 0.99),
    fanout_msgs_per_s: stats.fanoutMsgs / fanElapsed,
    fanout_deliveries_per_s: stats.fanoutEntries / fanElapsed,
    status_sent_per_s: cfg.peers / (cfg.statusEveryMs / 1000),
    presence_delay_p50_ms: quantile(stats.presenceDelays, 0.5),
    presence_delay_p99_ms: quantile(stats.presenceDelays, 0.99),
    state_delay_p50_ms: quantile(stats.stateDelays, 0.5),
    state_delay_p99_ms: quantile(stats.stateDelays, 0.99),
    loadgen_cpu_relay: relayCpu,
    loadgen_cpu_fanout: fanCpu,
    errors: stats.errors,
  };
  console.log("RESULT " + JSON.stringify(result));
  await sleep(200);
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
