// `npm run build`: writes dist/index.html (showing the version) and dist/assets/app.<hash>.js, where <hash> is
// the content hash, as bundlers name their output: a new version gets a new asset name. The version comes
// from FRONTEND_VERSION, else the VERSION file. A BREAK_BUILD file makes it fail, as a broken commit does.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

if (fs.existsSync('BREAK_BUILD')) {
  console.error('build failed: src/app.js(3,1): error TS2304 (BREAK_BUILD fixture)');
  process.exit(2);
}
const version = (process.env.FRONTEND_VERSION || fs.readFileSync('VERSION', 'utf8')).trim();
if (!/^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(version)) {
  console.error(`build failed: version ${JSON.stringify(version)} is not a tag (letters, digits, . _ + -)`);
  process.exit(2);
}
const app = fs.readFileSync(path.join('src', 'app.js'), 'utf8').replaceAll('__VERSION__', version);
const asset = `app.${crypto.createHash('sha256').update(app).digest('hex').slice(0, 10)}.js`;
const html = fs.readFileSync(path.join('src', 'index.html'), 'utf8')
  .replaceAll('__VERSION__', version)
  .replaceAll('__ASSET__', asset);

fs.rmSync('dist', {recursive: true, force: true});
fs.mkdirSync(path.join('dist', 'assets'), {recursive: true});
fs.writeFileSync(path.join('dist', 'assets', asset), app);
fs.writeFileSync(path.join('dist', 'index.html'), html);
console.log(`built ${version}: dist/index.html, dist/assets/${asset}`);
