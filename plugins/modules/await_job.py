#!/usr/bin/python
# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: await_job
short_description: Wait for a background (async) task, printing a heartbeat line at intervals, and return its result
version_added: 0.1.0
description:
  - Waits for a task started with C(async) and C(poll=0), as C(ansible.builtin.async_status) with C(until) does, but
    prints a line every O(heartbeat) seconds while it runs, so that a long backup or build does not look hung, in the
    output of C(ansible-playbook) and in an ansible-runner or AWX job's events alike.
  - Each line names O(label), the time since the wait began, and what the task says of its progress when it writes a
    JSON file at O(progress_path) (C(pg_backup)'s and C(metrics_watch)'s C(progress_file)) - C(bytes) written,
    its C(phase), or a C(text).
  - Returns the background task's own result, as if it had run in the foreground (a failed task fails this one), and
    removes the job's status file.
  - The host waits for the job's end (C(ansible.builtin.wait_for) on its status file) until the next heartbeat is due,
    so a wait costs one module run per heartbeat, not one per second as C(async_status) with C(until) and C(delay=1)
    would.
  - Runs on the controller (an action plugin); it reads the job's status and the progress file on the managed host.
options:
  jid:
    description: The C(ansible_job_id) the background task registered.
    type: str
    required: true
  heartbeat:
    description: Seconds between two heartbeat lines. V(0) prints none.
    type: float
    default: 30
  label:
    description: What runs, at the start of each line (V(backup), V(build npm run build)).
    type: str
    default: job
  progress_path:
    description: A JSON file the background task keeps up to date on the managed host (read at each heartbeat).
    type: path
attributes:
  check_mode:
    support: full
    description: It only waits and reads; a job started in check mode reports what it would have done.
  diff_mode:
    support: none
    description: It changes nothing; the background task's own result is returned as it is.
  action:
    support: full
    description: Runs on the controller as an action plugin.
  platform:
    support: full
    platforms: posix
    description: Reads the job's status with C(ansible.builtin.async_status) on the managed host.
notes:
  - The lines are printed with Ansible's display; ansible-runner records them as events of the job (AWX shows them in
    the job's output).
seealso:
  - module: ansible.builtin.async_status
author:
  - runbook.deploy contributors (@runbook-deploy)
"""

EXAMPLES = r"""
- name: Back up in the background
  runbook.deploy.pg_backup:
    db: app
    dest: /var/backups/postgres
    progress_file: /tmp/backup-progress.json
  async: 21600
  poll: 0
  register: backup_job

- name: Wait for the backup, with a line every 30 seconds ("backup 2 min 10 s; dump, 1.2 GiB written")
  runbook.deploy.await_job:
    jid: "{{ backup_job.ansible_job_id }}"
    label: backup
    progress_path: /tmp/backup-progress.json
  register: backup_result
"""

RETURN = r"""
heartbeats:
  description: The lines printed while waiting, in order.
  returned: always
  type: list
  elements: str
  sample: ["backup 30 s; dump, 412.0 MiB written", "backup 1 min 00 s; verify, 1.2 GiB written"]
waited_s:
  description: Seconds spent waiting.
  returned: always
  type: float
  sample: 64.2
"""
