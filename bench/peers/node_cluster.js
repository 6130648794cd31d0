// The Node peer: the standard `cluster` module with N workers, re-forking a worker that dies,
// and on SIGHUP a rolling restart (fork the new worker, retire the old once it listens), the
// usual hand-made reload of cluster apps.
'use strict';
const cluster = require('cluster');
const http = require('http');

const port = Number(process.argv[2]);
const workers = Number(process.argv[3] || 2);

if (cluster.isPrimary) {
  const fork = () => cluster.fork();
  for (let i = 0; i < workers; i++) fork();
  let reloading = false;
  cluster.on('exit', (w) => { if (!w.exitedAfterDisconnect) fork(); });
  process.on('SIGHUP', async () => {
    if (reloading) return;
    reloading = true;
    for (const old of Object.values(cluster.workers)) {
      const fresh = fork();
      await new Promise((resolve) => fresh.once('listening', resolve));
      old.disconnect();
    }
    reloading = false;
  });
  process.on('SIGTERM', () => { for (const w of Object.values(cluster.workers)) w.kill(); process.exit(0); });
} else {
  http.createServer((req, res) => { res.setHeader('Content-Type', 'text/plain'); res.end('Hello, World!'); })
    .listen(port, '127.0.0.1');
}
