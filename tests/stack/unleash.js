// Launcher for a private Unleash server, started by tests/stack/stack.py.
// Everything comes from the environment (never argv, so secrets stay out of `ps`):
//   RUNBOOK_PG_HOST, RUNBOOK_PG_PORT, RUNBOOK_PG_USER, RUNBOOK_PG_PASSWORD  database (db name: unleash)
//   RUNBOOK_UNLEASH_PORT                                                   HTTP port on 127.0.0.1
//   RUNBOOK_UNLEASH_TOKEN                                                  initial admin API token ("*:*.<random>")
//   RUNBOOK_UNLEASH_ADMIN_PASSWORD                                         password of the UI user "admin"
//                                                                          (instead of the well-known default)
// Outbound calls are off: versionCheck below, plus CHECK_VERSION=false and SEND_TELEMETRY=false which
// stack.py sets (unleash-server 7.4.1 ignores `telemetry: false` given as an option: it reads
// `options.telemetry || env SEND_TELEMETRY`).
'use strict';

function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`unleash.js: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

async function main() {
  const port = Number(need('RUNBOOK_UNLEASH_PORT'));
  // unleash-server is an ES module: import() works on every Node >= 20 (require() of ESM only on 20.19+).
  const unleash = await import('unleash-server');
  await unleash.start({
    db: {
      host: need('RUNBOOK_PG_HOST'),
      port: Number(need('RUNBOOK_PG_PORT')),
      user: need('RUNBOOK_PG_USER'),
      password: need('RUNBOOK_PG_PASSWORD'),
      database: 'unleash',
      ssl: false,
    },
    server: { port, host: '127.0.0.1' },
    versionCheck: { enable: false },
    telemetry: false,
    authentication: {
      initialAdminUser: { username: 'admin', password: need('RUNBOOK_UNLEASH_ADMIN_PASSWORD') },
      initApiTokens: [
        {
          type: 'admin',
          secret: need('RUNBOOK_UNLEASH_TOKEN'),
          environment: '*',
          project: '*',
          tokenName: 'ci',
        },
      ],
    },
    logLevel: process.env.LOG_LEVEL || 'info',
  });
  console.log(`unleash.js: listening on http://127.0.0.1:${port}`);
}

// unleash-server 7 records a new flag's lifecycle from an async event listener: when the flag is deleted before that
// insert runs (a test that creates a flag and removes it at once, on a loaded machine), the insert fails on its
// foreign key and the rejected promise would end the whole server (Node's default for an unhandled rejection), and
// every later test would find nothing listening. Log it and keep serving, as a production process manager would
// restart it.
process.on('unhandledRejection', (reason) => {
  console.error('unleash.js: unhandled rejection, server kept running:', (reason && reason.stack) || reason);
});
// The same insert can also fail through an event emitter without an 'error' listener, which throws: CI28 lost its
// Unleash that way in the middle of the feature_flag tests (the log ends on the foreign key error). Same answer.
process.on('uncaughtException', (err) => {
  console.error('unleash.js: uncaught exception, server kept running:', (err && err.stack) || err);
});

main().catch((err) => {
  console.error('unleash.js: failed to start:', err);
  process.exit(1);
});
