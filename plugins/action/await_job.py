# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of runbook.deploy.await_job (documented in plugins/modules/await_job.py)."""

from __future__ import annotations

import base64
import json
import time

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash

from ansible_collections.runbook.deploy.plugins.plugin_utils import human

display = Display()

# Keys of async_status's own answer, not of the background task's result.
STATUS_KEYS = ('ansible_job_id', 'started', 'finished', 'results_file', 'erased')


def heartbeat_line(label, waited, progress):
    """'backup 1 min 10 s; dump, 1.2 GiB written' from the label, the time waited and the task's progress file."""
    parts = []
    if isinstance(progress, dict):
        if progress.get('phase'):
            parts.append(str(progress['phase']))
        if isinstance(progress.get('bytes'), int):
            parts.append('%s written' % human.size(progress['bytes']))
        if progress.get('text'):
            parts.append(str(progress['text']))
    return '%s %s%s' % (label, human.duration(waited, decimals=0), ('; ' + ', '.join(parts)) if parts else '')


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(('jid', 'heartbeat', 'label', 'progress_path'))

    def _async_dir(self):
        return self._remote_expand_user(self.get_shell_option('async_dir', default='~/.ansible_async'))

    def _status(self, task_vars, jid, mode='status'):
        return self._execute_module(module_name='ansible.legacy.async_status', task_vars=task_vars,
                                    module_args={'jid': jid, 'mode': mode, '_async_dir': self._async_dir()})

    def _wait_for_end(self, task_vars, jid, seconds):
        """Wait on the host, up to `seconds`, for the job's status file to hold its result: one module run per wait,
        however long it lasts (polling async_status would run a module every second or so). Until the job ends the
        file holds only {"started": 1, "finished": 0, "ansible_job_id": ...}; a module's result always has
        "invocation" (or "failed" and "msg" when the job itself failed). True when it has ended."""
        waited = self._execute_module(module_name='ansible.legacy.wait_for', task_vars=task_vars, module_args={
            'path': self._connection._shell.join_path(self._async_dir(), jid),
            'search_regex': '"(?:invocation|failed|msg)"', 'timeout': max(1, int(round(seconds)))})
        return not waited.get('failed')

    def _progress(self, task_vars, path):
        if not path:
            return None
        read = self._execute_module(module_name='ansible.legacy.slurp', task_vars=task_vars, module_args={'src': path})
        if read.get('failed') or 'content' not in read:
            return None  # not written yet, or already removed at the end
        try:
            return json.loads(base64.b64decode(read['content']))
        except ValueError:
            return None

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        validation, args = self.validate_argument_spec(argument_spec=dict(
            jid=dict(type='str', required=True),
            heartbeat=dict(type='float', default=30),
            label=dict(type='str', default='job'),
            progress_path=dict(type='path'),
        ))
        started = time.time()
        next_beat = started + args['heartbeat'] if args['heartbeat'] > 0 else None
        lines = []
        while True:
            if self._wait_for_end(task_vars, args['jid'], (next_beat - time.time()) if next_beat else 300):
                status = self._status(task_vars, args['jid'])
                break
            # Not over when the wait ended: unless the job is gone (an unknown jid, a status file removed), say
            # where it stands.
            status = self._status(task_vars, args['jid'])
            if status.get('finished'):
                break
            now = time.time()
            if next_beat is not None and now >= next_beat - 0.5:
                line = heartbeat_line(args['label'], now - started, self._progress(task_vars, args['progress_path']))
                display.display(line)
                lines.append(line)
                while next_beat <= now + 0.5:
                    next_beat += args['heartbeat']
        self._status(task_vars, args['jid'], mode='cleanup')
        job = dict((k, v) for k, v in status.items() if k not in STATUS_KEYS)
        result = merge_hash(result, job)
        result.update(heartbeats=lines, waited_s=round(time.time() - started, 1))
        return result
