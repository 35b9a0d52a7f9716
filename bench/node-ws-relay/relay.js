// Benchmark stand-in for jsmpeg's websocket-relay.js: every message a client sends is
// sent to every other open client, with ws's unbounded per-client buffering (as jsmpeg).
// One difference for the benchmarks: the URL path selects a room, so scenarios can run
// several independent streams (jsmpeg has one room).  Usage: node relay.js PORT
'use strict';
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || 8081);
const rooms = new Map();
const server = http.createServer((req, res) => { res.writeHead(404); res.end(); });
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });

wss.on('connection', (socket, req) => {
  const name = req.url || '/';
  let room = rooms.get(name);
  if (!room) { room = new Set(); rooms.set(name, room); }
  room.add(socket);
  socket.on('message', (data, isBinary) => {
    for (const other of room) {
      if (other !== socket && other.readyState === WebSocket.OPEN) other.send(data, { binary: isBinary });
    }
  });
  const leave = () => { room.delete(socket); if (room.size === 0 && rooms.get(name) === room) rooms.delete(name); };
  socket.on('close', leave);
  socket.on('error', leave);
});

server.listen(port, '127.0.0.1', () => console.log(`node ws relay on 127.0.0.1:${port}`));
process.on('SIGTERM', () => process.exit(0));
