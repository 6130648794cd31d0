#!/usr/bin/env node
// A plain Node HTTP service (no dependencies) that runs under `loopfleet run`, under systemd,
// or alone. It serves the listening sockets passed by systemd's rules (LISTEN_FDS from fd 3,
// LISTEN_PID), reports READY=1 / STOPPING=1, and drains on SIGTERM.
//
//   loopfleet run --workers auto --listen 127.0.0.1:8080 -- node examples/node/app.js
//   node examples/node/app.js 127.0.0.1:8080                      # alone
//
// Node cannot send to a Unix datagram socket by name, so under loopfleet it writes to
// LOOPFLEET_NOTIFY_FD, a datagram socket the supervisor has already connected to
// NOTIFY_SOCKET. (Under systemd, `systemd-notify` would do.)
'use strict';
const fs = require('fs');
const http = require('http');
const net = require('net');

const DRAIN_IDLE_TIMEOUT_MS = 1000;

function notify(state) {
  const fd = Number(process.env.LOOPFLEET_NOTIFY_FD);
  if (!Number.isInteger(fd) || fd < 3) return;
  try { fs.writeSync(fd, state); } catch (e) { /* the supervisor is gone: nothing to tell */ }
}

function inheritedFds() {
  if (process.env.LISTEN_PID !== String(process.pid)) return [];
  const n = Number(process.env.LISTEN_FDS || 0);
  delete process.env.LISTEN_PID; delete process.env.LISTEN_FDS; delete process.env.LISTEN_FDNAMES;
  return Array.from({ length: n }, (_, i) => 3 + i);
}

let draining = false;
const routes = {
  '/': () => 'Hello, World!',
  '/healthz': () => 'ok\n',
  '/pid': () => `${process.pid}\n`,
};

function handle(req, res) {
  const path = req.url.split('?')[0];
  const route = routes[path];
  if (draining) res.setHeader('Connection', 'close');
  res.setHeader('Content-Type', 'text/plain');
  if (!route) { res.statusCode = 404; res.end('Not Found\n'); return; }
  res.end(route());
}

const fds = inheritedFds();
const targets = fds.length ? fds.map((fd) => ({ fd })) : [(() => {
  const [host, port] = (process.argv[2] || '127.0.0.1:8080').split(/:(?=\d+$)/);
  return { host, port: Number(port) };
})()];
let listening = 0;
const servers = targets.map((t) => {
  const server = http.createServer(handle);  // one server per socket: a server listens once
  server.keepAliveTimeout = 60000;
  server.listen(t, () => {
    if (++listening === targets.length) {
      console.error(`node worker ${process.pid} serving`);
      notify('READY=1\nSTATUS=serving');
    }
  });
  return server;
});

// WATCHDOG=1 from the event loop at half the interval the supervisor expects: a blocked
// loop stops the beats, and the supervisor replaces the worker.
const watchdogUsec = Number(process.env.WATCHDOG_USEC || 0);
if (watchdogUsec > 0) setInterval(() => notify('WATCHDOG=1'), watchdogUsec / 2000).unref();

process.on('SIGTERM', () => {
  draining = true;
  notify('STOPPING=1\nSTATUS=draining');
  // Stop accepting; connections end after their next response (Connection: close) or,
  // if idle, after a last chance to send one more request.
  let open = servers.length;
  for (const server of servers) {
    // net.Server's close only stops accepting; http.Server's (Node >= 19) would also close
    // idle keep-alive connections at once, failing the request a client is sending right then.
    net.Server.prototype.close.call(server, () => { if (--open === 0) process.exit(0); });
    setTimeout(() => server.closeIdleConnections(), DRAIN_IDLE_TIMEOUT_MS);
  }
  setTimeout(() => process.exit(0), 30000).unref();
});
