// `npm run build`: writes dist/build.json. The version comes from APP_VERSION (set by the deploy) or the VERSION file.
// SAMPLE_FAULT builds a deliberately broken release, to see the runbook catch it:
//   build  -> the build fails (as a broken commit does)     smoke -> /api/cases answers 500 (smoke tests fail)
//   watch  -> /metrics reports a 20% error rate (the post-deploy watch window fails)
// A BREAK_BUILD file also makes the build fail.
'use strict';
const fs = require('fs');
const fault = process.env.SAMPLE_FAULT || '';
if (fs.existsSync('BREAK_BUILD') || fault === 'build') {
  console.error('build failed: src/index.ts(12,5): error TS2322 (BREAK_BUILD fixture)');
  process.exit(2);
}
fs.mkdirSync('dist', {recursive: true});
const version = (process.env.APP_VERSION || fs.readFileSync('VERSION', 'utf8')).trim();
fs.writeFileSync('dist/build.json', JSON.stringify({version, fault, built_at: new Date().toISOString()}) + '\n');
console.log(`built ${version}${fault ? ` (fault: ${fault})` : ''}`);
