// PM2 ecosystem of the sample app. Settings come from the release's .env (linked from shared/).
'use strict';
const fs = require('fs');
const path = require('path');

function readEnv(file) {
  const env = {};
  if (!fs.existsSync(file)) return env;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = line.match(/^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)\s*$/);
    if (m) env[m[1]] = m[2];
  }
  return env;
}

const dotenv = readEnv(path.join(__dirname, '.env'));
// PM2 keeps a process's script path across reloads. Give it the `current` symlink's path (APP_DIR), not this
// release's real directory, so that `pm2 reload` after a release switch runs the new release.
const appDir = process.env.APP_DIR || dotenv.APP_DIR || __dirname;
// What the apps need from .env: the database, and where the shared node_modules are (NODE_PATH).
const shared = {};
for (const key of ['DATABASE_URL', 'NODE_PATH']) if (dotenv[key]) shared[key] = dotenv[key];
module.exports = {
  apps: [
    {
      name: dotenv.API_NAME || 'sample-api',
      script: './server.js',
      cwd: appDir,
      exec_mode: 'cluster',
      instances: 2,
      wait_ready: true,
      listen_timeout: 5000,
      env: Object.assign({PORT: dotenv.PORT || 3000, NODE_ENV: 'development'}, shared),
      env_production: {NODE_ENV: 'production'},
      env_staging: {NODE_ENV: 'staging'},
    },
    {
      name: dotenv.WORKER_NAME || 'sample-worker',
      script: './worker.js',
      cwd: appDir,
      env: Object.assign({NODE_ENV: 'development'}, shared),
      env_production: {NODE_ENV: 'production'},
      env_staging: {NODE_ENV: 'staging'},
    },
  ],
};
