// The sample sync worker: wakes up every second (a real one would drain the sync queue).
'use strict';
setInterval(() => {}, 1000);
