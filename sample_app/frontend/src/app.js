// The sample frontend's code; build.js puts the version in and names the file after its content hash.
'use strict';
document.getElementById('version').textContent = '__VERSION__';
