// The reference: a minimal Node socket.io server with the same relay events as ours, and nothing
// else (no auth, no validation, no database, no rate limit, presence fanned out as it comes).
//   node node_server.mjs PORT
import { randomUUID } from "node:crypto";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 3000);
const io = new Server(port, { transports: ["websocket"], pingInterval: 5000, pingTimeout: 5000 });
const rooms = new Map(); // room -> Map(peer_id -> entry)

io.on("connection", (socket) => {
  let room = null;
  let peerId = null;
  const leave = () => {
    if (!room) return;
    rooms.get(room)?.delete(peerId);
    socket.to(`r:${room}`).emit("peer_left", { room, peer_ids: [peerId] });
    socket.leave(`r:${room}`);
    socket.leave(`p:${room}:${peerId}`);
    room = null;
  };
  socket.on("join_room", (data, ack) => {
    room = String(data.room);
    peerId = randomUUID();
    const entry = { peer_id: peerId, username: "bench", backend: data.capabilities?.backend ?? "", state: "idle", models_warm: [], queue: 0, tok_s: 0 };
    if (!rooms.has(room)) rooms.set(room, new Map());
    const peers = [...rooms.get(room).values()];
    rooms.get(room).set(peerId, entry);
    socket.join(`r:${room}`);
    socket.join(`p:${room}:${peerId}`);
    socket.to(`r:${room}`).emit("peer_joined", { room, peers: [entry] });
    if (typeof ack === "function") ack({ peer_id: peerId, peers, ice_servers: [] });
  });
  socket.on("signal", (msg) => {
    if (!room || !msg) return;
    io.to(`p:${room}:${msg.to}`).emit("signal", { from: peerId, kind: msg.kind, data: msg.data });
  });
  socket.on("status", (status) => {
    if (!room) return;
    const entry = Object.assign(rooms.get(room).get(peerId), status);
    socket.to(`r:${room}`).emit("peer_updated", { room, peers: [entry] });
  });
  socket.on("leave_room", (_data, ack) => {
    leave();
    if (typeof ack === "function") ack({ ok: true });
  });
  socket.on("disconnect", leave);
});
console.log(`node reference listening on ${port}`);
