// `npm run build`: writes dist/build.json from VERSION. A BREAK_BUILD file makes it fail, as a broken commit does.
'use strict';
const fs = require('fs');
if (fs.existsSync('BREAK_BUILD')) {
  console.error('build failed: src/index.ts(12,5): error TS2322 (BREAK_BUILD fixture)');
  process.exit(2);
}
fs.mkdirSync('dist', {recursive: true});
const version = fs.readFileSync('VERSION', 'utf8').trim();
fs.writeFileSync('dist/build.json', JSON.stringify({version, built_at: new Date().toISOString()}) + '\n');
console.log(`built ${version}`);
