// The sample API (PM2 cluster). A CRASH file makes it crash at start-up.
//   /health      {"status":"healthy","version":...}
//   /api/cases   {"count": N} read from PostgreSQL (DATABASE_URL; the `pg` driver via NODE_PATH)
//   /metrics     Prometheus text: requests by status, a latency histogram, the sync queue size
// The fault recorded at build time (dist/build.json, see build.js) breaks /api/cases or the error metrics.
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');
if (fs.existsSync(path.join(__dirname, 'CRASH'))) {
  console.error('FATAL: cannot connect to the database (CRASH fixture)');
  setTimeout(() => process.exit(1), 100);
} else {
  const build = JSON.parse(fs.readFileSync(path.join(__dirname, 'dist', 'build.json'), 'utf8'));
  const port = Number(process.env.PORT || 3000);
  let pool = null;
  if (process.env.DATABASE_URL) {
    try {
      const {Pool} = require('pg');
      pool = new Pool({connectionString: process.env.DATABASE_URL, max: 2, idleTimeoutMillis: 1000});
    } catch (err) {
      console.error(`no database driver: ${err.message}`);
    }
  }
  const buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];
  const stats = {status: {}, hist: buckets.map(() => 0), inf: 0, sum: 0, queue: 0};
  const observe = (status, seconds) => {
    stats.status[status] = (stats.status[status] || 0) + 1;
    buckets.forEach((b, i) => { if (seconds <= b) stats.hist[i] += 1; });
    stats.inf += 1;
    stats.sum += seconds;
  };
  const metrics = () => {
    // The "watch" fault reports one request in five as a 500 on top of the real counts.
    const status = Object.assign({}, stats.status);
    if (build.fault === 'watch') status['500'] = (status['500'] || 0) + Math.ceil(stats.inf / 4) + 1;
    const lines = ['# HELP http_requests_total Requests served, by status.', '# TYPE http_requests_total counter'];
    for (const [code, n] of Object.entries(status)) lines.push(`http_requests_total{status="${code}"} ${n}`);
    lines.push('# HELP http_request_duration_seconds Request latency.', '# TYPE http_request_duration_seconds histogram');
    buckets.forEach((b, i) => lines.push(`http_request_duration_seconds_bucket{le="${b}"} ${stats.hist[i]}`));
    lines.push(`http_request_duration_seconds_bucket{le="+Inf"} ${stats.inf}`);
    lines.push(`http_request_duration_seconds_sum ${stats.sum}`, `http_request_duration_seconds_count ${stats.inf}`);
    lines.push('# HELP sync_queue_size Items waiting in the sync queue.', '# TYPE sync_queue_size gauge');
    lines.push(`sync_queue_size ${stats.queue}`);
    return lines.join('\n') + '\n';
  };
  const reply = (res, started, code, body, type = 'application/json') => {
    res.statusCode = code;
    res.setHeader('content-type', type);
    res.end(type === 'application/json' ? JSON.stringify(body) : body);
    observe(code, Number(process.hrtime.bigint() - started) / 1e9);
  };
  const server = http.createServer((req, res) => {
    const started = process.hrtime.bigint();
    if (req.url === '/health' || req.url === '/') {
      reply(res, started, 200, {status: 'healthy', version: build.version});
    } else if (req.url === '/metrics') {
      reply(res, started, 200, metrics(), 'text/plain; version=0.0.4');
    } else if (req.url === '/api/cases') {
      // Errors are logged on stderr as an Express app's error handler would: PM2 keeps them in the error log.
      const fail = (code, message) => {
        console.error(`GET /api/cases failed: ${message}`);
        reply(res, started, code, {error: message});
      };
      if (build.fault === 'smoke') return fail(500, 'relation "cases" does not exist');
      if (!pool) return fail(503, 'DATABASE_URL is not set');
      pool.query('SELECT count(*)::int AS count FROM cases').then(
        (r) => reply(res, started, 200, {count: r.rows[0].count, version: build.version}),
        (err) => fail(500, err.message));
    } else {
      reply(res, started, 404, {error: 'not found'});
    }
  });
  server.listen(port, '127.0.0.1', () => { if (process.send) process.send('ready'); });
  // Graceful stop (PM2 sends SIGINT). In cluster mode, leave through cluster.worker.disconnect(): it closes the server
  // and waits for the primary to confirm before the IPC channel closes, so a connection the primary handed over in the
  // meantime is refused back to it and goes to another worker. Calling process.exit() as soon as server.close()
  // returns can exit with such a connection in flight, and that client then waits for an answer that never comes.
  process.on('SIGINT', () => {
    const cluster = require('cluster');
    if (!cluster.isWorker) return server.close(() => process.exit(0));
    cluster.worker.on('disconnect', () => process.exit(0));
    cluster.worker.disconnect();
  });
}
