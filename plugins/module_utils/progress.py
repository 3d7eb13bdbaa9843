# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A long task's progress, in a small JSON file a heartbeat reads (runbook.deploy.await_job, the watch role).

The file is replaced atomically (written under a private name, then renamed), readable only by its owner (0600),
and removed when the task ends, whatever happens: its absence tells a reader that the task is over.
"""

from __future__ import annotations

import json
import os
import threading
import time


def write(path, progress):
    """Replace the progress file at path with progress (a JSON-able dict)."""
    partial = '%s.%d.tmp' % (path, os.getpid())
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, 'w') as handle:
        json.dump(progress, handle)
    os.rename(partial, path)


def remove(path):
    for name in (path, '%s.%d.tmp' % (path, os.getpid())):
        try:
            os.unlink(name)
        except OSError:
            pass


def tree_size(path):
    """Bytes in a file, or in every file under a directory (a directory-format dump); 0 when it is not there yet."""
    try:
        if not os.path.isdir(path):
            return os.path.getsize(path)
        return sum(os.path.getsize(os.path.join(root, name)) for root, dummy, names in os.walk(path) for name in names)
    except OSError:
        return 0


class Reporter(threading.Thread):
    """Writes {'phase', 'bytes', 'elapsed_s'} to path every interval seconds while the task runs, from measure()
    (the bytes written so far) and the phase the task sets; stop() removes the file. Without a path it does nothing."""

    def __init__(self, path, measure, interval=1.0):
        super(Reporter, self).__init__(name='progress', daemon=True)
        self.path = path
        self.measure = measure
        self.interval = interval
        self.phase = 'start'
        self.started = time.time()
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.write_now()
            self.stopping.wait(self.interval)

    def write_now(self):
        if not self.path:
            return
        try:
            write(self.path, dict(phase=self.phase, bytes=int(self.measure()),
                                  elapsed_s=round(time.time() - self.started, 1)))
        except OSError:
            pass  # a full disk must not fail the backup because of its progress line

    def __enter__(self):
        if self.path:
            self.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        if self.path and self.is_alive():
            self.join(5)
        if self.path:
            remove(self.path)
        return False
