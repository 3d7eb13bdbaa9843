// The sample API: /health answers {"status":"healthy","version":...}. A CRASH file makes it crash at start-up.
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
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url === '/health' || req.url === '/') {
      res.end(JSON.stringify({status: 'healthy', version: build.version}));
    } else {
      res.statusCode = 404;
      res.end(JSON.stringify({error: 'not found'}));
    }
  });
  server.listen(port, '127.0.0.1', () => { if (process.send) process.send('ready'); });
  process.on('SIGINT', () => server.close(() => process.exit(0)));
}
