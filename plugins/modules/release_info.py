#!/usr/bin/python
# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_info
short_description: Read which release a host's apps run, from their processes, and the release records
version_added: 0.1.0
description:
  - Reads, on the host, in one module run, what a deployment needs to know before it changes anything there, and
    again after the switch (the backend role's C(tasks_from=running), the deployment role's C(tasks_from=current)).
  - The PM2 processes of O(apps), from C(pm2 jlist) run with C(PM2_HOME=)O(pm2_home), only when the PM2 daemon of
    O(pm2_home) runs (a bare C(pm2 jlist) would start one).
  - The directory each process runs in (C(/proc/PID/cwd)), which the kernel resolved when the process started; a
    process shows the release it started in, whatever C(current) has pointed to since (a run killed between the
    switch and the reload leaves C(current) on the new release and the old code running).
  - The releases under O(deploy_to)C(/releases) those directories are in, and each one's release record
    (C(RELEASE.json)); the release record O(current_record) (what C(current) points to) when given.
  - Never returns a process's environment (C(pm2 jlist) carries all of it, secrets included), only the fields listed
    under RV(processes).
options:
  deploy_to:
    description: The root of the release layout (C(releases/<name>), C(shared), C(current)).
    type: path
    required: true
  apps:
    description: The PM2 apps whose processes to read. Empty reads none (RV(running_releases) is V([])).
    type: list
    elements: str
    default: []
  pm2_home:
    description: The PM2 home of the apps' daemon. Defaults to C(PM2_HOME), then C(~/.pm2) of the remote user.
    type: path
  executable:
    description: The pm2 executable. Defaults to C(pm2) on C(PATH).
    type: str
  current_record:
    description: A release record to read as well (the deployment role's C(current/RELEASE.json)), returned as
      RV(current). A file that is not there reads as V({}).
    type: path
attributes:
  check_mode:
    support: full
    description: It only reads; a check run reads what a real run would.
  diff_mode:
    support: none
    description: It changes nothing.
  platform:
    support: full
    platforms: linux
    description: The working directories come from C(/proc).
notes:
  - When the daemon runs but C(pm2 jlist) fails, the processes cannot be told; RV(running_releases) is V([]) and
    RV(pm2_error) says why, as when no daemon runs (the callers then judge from C(current)).
  - A release record that is there but is not a JSON object fails the module, naming the file.
seealso:
  - module: runbook.deploy.pm2_service
author:
  - runbook.deploy contributors (@runbook-deploy)
"""

EXAMPLES = r"""
- name: Read which release the apps run, and what current points to
  runbook.deploy.release_info:
    deploy_to: /srv/pfa
    apps: [pfa-backend, pfa-worker]
    pm2_home: /home/deploy/.pm2
    current_record: /srv/pfa/current/RELEASE.json
  register: release_state

- name: Say which version runs
  ansible.builtin.debug:
    msg: >-
      {{ release_state.running_releases | map('basename') | join(', ') or 'unknown from the processes' }};
      current is {{ release_state.current.version | default('none') }}
"""

RETURN = r"""
processes:
  description: The processes of O(apps), in C(pm2 jlist)'s order; never their environment.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The app's name.
      type: str
      returned: always
    pm_id:
      description: PM2's id of the process.
      type: int
      returned: always
    pid:
      description: The process id (V(0) or V(null) when it does not run).
      type: int
      returned: always
    status:
      description: PM2's status, such as V(online), V(stopped) or V(errored).
      type: str
      returned: always
    cwd:
      description: The directory the process runs in, resolved (C(/proc/PID/cwd)); V(null) when it cannot be read.
      type: str
      returned: always
    release:
      description: The release directory (O(deploy_to)C(/releases/<name>)) RV(processes[].cwd) is in, else V(null).
      type: str
      returned: always
    pm_exec_path:
      description: The script PM2 runs.
      type: str
      returned: always
    pm_cwd:
      description: The working directory PM2 was given.
      type: str
      returned: always
    pm_out_log_path:
      description: The process's output log.
      type: str
      returned: always
    pm_err_log_path:
      description: The process's error log.
      type: str
      returned: always
    restarts:
      description: PM2's restart count.
      type: int
      returned: always
  sample:
    - {name: pfa-backend, pm_id: 0, pid: 4242, status: online, cwd: /srv/pfa/releases/v3.1.0,
       release: /srv/pfa/releases/v3.1.0, pm_exec_path: /srv/pfa/current/dist/server.js, pm_cwd: /srv/pfa/current,
       pm_out_log_path: /home/deploy/.pm2/logs/pfa-backend-out.log,
       pm_err_log_path: /home/deploy/.pm2/logs/pfa-backend-error.log, restarts: 0}
running_releases:
  description: The release directories the processes run in, each once, in the processes' order (paths under
    O(deploy_to) as given, not resolved); V([]) when that cannot be told (no daemon, no process, a process outside
    the releases).
  returned: always
  type: list
  elements: str
  sample: [/srv/pfa/releases/v3.1.0]
records:
  description: The release record (C(RELEASE.json)) of each of RV(running_releases), V({}) for one without a record.
  returned: always
  type: dict
  sample: {/srv/pfa/releases/v3.1.0: {app: pfa, version: v3.1.0, built_at: "2026-12-01T10:00:00+00:00"}}
current:
  description: The release record O(current_record) (V({}) when it is not there, or O(current_record) is not given).
  returned: always
  type: dict
  sample: {app: pfa, version: v3.2.0}
pm2_error:
  description: Why the processes could not be listed although the daemon runs (C(pm2 jlist) failed), else V("").
  returned: always
  type: str
  sample: ""
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.runbook.deploy.plugins.module_utils import pm2 as pm2lib
from ansible_collections.runbook.deploy.plugins.module_utils.command import CommandRunner, find_tool, last_lines

RECORD_NAME = 'RELEASE.json'


class RecordError(Exception):
    """A release record that is there but cannot be used."""


def read_record(path):
    """A release record as a dict; {} when the file is not there."""
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        raise RecordError('could not read the release record %s: %s' % (path, exc.strerror or exc))
    try:
        record = json.loads(data.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordError('the release record %s is not valid JSON (%s); rebuild that release or remove the file'
                          % (path, exc))
    if not isinstance(record, dict):
        raise RecordError('the release record %s is not a JSON object' % path)
    return record


def process_cwd(pid):
    """The resolved working directory of a process, or None (gone, not ours to read, no pid)."""
    if not pid:
        return None
    try:
        return os.path.realpath(os.readlink('/proc/%d/cwd' % int(pid)))
    except (OSError, ValueError):
        return None


def release_of(cwd, real_releases, releases):
    """The release directory (under releases, as given) that cwd is in, or None."""
    if not cwd or not cwd.startswith(real_releases + os.sep):
        return None
    name = cwd[len(real_releases) + 1:].split(os.sep, 1)[0]
    return os.path.join(releases, name) if name else None


def describe(proc, real_releases, releases):
    env = proc.get('pm2_env') or {}
    cwd = process_cwd(proc.get('pid'))
    return dict(name=proc.get('name'), pm_id=proc.get('pm_id'), pid=proc.get('pid'), status=env.get('status'),
                cwd=cwd, release=release_of(cwd, real_releases, releases), pm_exec_path=env.get('pm_exec_path'),
                pm_cwd=env.get('pm_cwd'), pm_out_log_path=env.get('pm_out_log_path'),
                pm_err_log_path=env.get('pm_err_log_path'), restarts=env.get('restart_time', 0))


def list_apps(module, apps, pm2_home, executable):
    """(processes of apps as pm2 jlist lists them, why they could not be listed or '')."""
    if not apps or not pm2lib.daemon_running(pm2_home):
        return [], ''
    pm2 = executable if os.sep in executable else find_tool(executable)
    if not pm2:
        return [], '%s was not found on PATH' % executable
    rc, out, err = CommandRunner(module).run([pm2, 'jlist'],
                                             env={'PM2_HOME': pm2_home, 'PM2_DISABLE_VERSION_CHECK': '1'})
    if rc != 0:
        return [], 'pm2 jlist failed (PM2_HOME %s): %s' % (pm2_home, last_lines(err or out, 3))
    try:
        procs = pm2lib.parse_jlist(out)
    except pm2lib.Pm2Error as exc:
        return [], str(exc)
    return [p for p in procs if isinstance(p, dict) and p.get('name') in apps], ''


def main():
    module = AnsibleModule(
        argument_spec=dict(
            deploy_to=dict(type='path', required=True),
            apps=dict(type='list', elements='str', default=[]),
            pm2_home=dict(type='path'),
            executable=dict(type='str'),
            current_record=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    pm2_home = p['pm2_home'] or os.environ.get('PM2_HOME') or os.path.join(os.environ.get('HOME', '/root'), '.pm2')
    releases = os.path.join(p['deploy_to'].rstrip(os.sep) or os.sep, 'releases')
    real_releases = os.path.realpath(releases)

    procs, pm2_error = list_apps(module, p['apps'], pm2_home, p['executable'] or 'pm2')
    processes = [describe(proc, real_releases, releases) for proc in procs]
    running = []
    for process in processes:
        if process['release'] and process['release'] not in running:
            running.append(process['release'])
    try:
        records = dict((release, read_record(os.path.join(release, RECORD_NAME))) for release in running)
        current = read_record(p['current_record']) if p['current_record'] else {}
    except RecordError as exc:
        module.fail_json(msg=str(exc), processes=processes, running_releases=running, pm2_error=pm2_error)
    module.exit_json(changed=False, processes=processes, running_releases=running, records=records, current=current,
                     pm2_error=pm2_error)


if __name__ == '__main__':
    main()
