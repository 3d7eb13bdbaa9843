#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pm2_service
short_description: Start, stop, restart, reload or delete PM2-managed Node applications, and wait until they are stable
version_added: 0.1.0
description:
  - Manages apps of a PM2 ecosystem file (or apps PM2 already knows) the way the runbooks do by hand
    (C(pm2 start ecosystem.config.js --only NAME --env ENV), C(pm2 reload), C(pm2 stop)), idempotently from
    C(pm2 jlist).
  - Checks app and env names against the ecosystem file first, because PM2 itself silently ignores an
    unknown C(--only) or C(--env), and runs one command per app, because C(pm2 stop --only a,b) does nothing.
  - After a start, restart or reload it waits until every instance is online and has not restarted for
    O(stable_for) seconds, and optionally until O(ready_url) answers, instead of the runbooks' C(sleep 30).
    A crash-looping app fails the task with the tail of its error log.
options:
  name:
    description:
      - The app or apps to manage (their PM2 names).
    type: list
    elements: str
    required: true
  state:
    description:
      - V(started) starts apps that are not online; online apps are left alone.
      - V(stopped) stops apps that run.
      - V(restarted) always restarts (a cold restart, with downtime).
      - V(reloaded) always reloads; zero-downtime in cluster mode, a restart in fork mode (the module warns).
      - V(absent) deletes the apps from PM2.
      - See O(rehome) for apps running from another directory than the ecosystem's.
    type: str
    default: started
    choices: [ started, stopped, restarted, reloaded, absent ]
  ecosystem:
    description:
      - Path of the ecosystem file (C(.js), C(.cjs) or C(.json)). Needed to start apps PM2 does not know yet,
        and to apply O(env). Its apps and env names are checked before anything runs.
    type: path
  env:
    description:
      - The ecosystem environment (C(--env)), for example V(production) for an app's C(env_production) block.
      - An app must define C(env_<env>) or the ecosystem a C(deploy.<env>) section.
    type: str
  update_env:
    description:
      - Pass C(--update-env), so a restart or reload also refreshes the variables PM2 took from the environment
        pm2 was started in. Without it PM2 keeps a running app's environment when restarted by name; with an
        ecosystem file and O(env), PM2 7 applies the ecosystem's C(env)/C(env_<env>) blocks either way.
      - That environment is the minimal one the module gives pm2 (see the notes), never the task's.
    type: bool
    default: false
  rehome:
    description:
      - With O(state=started), V(restarted) or V(reloaded), move an app whose processes run from another directory
        or script than the ecosystem gives it (an app started by hand in a git checkout, or one PM2 kept on an old
        release's path) onto the ecosystem's. PM2 keeps a process's cwd and script across reloads and restarts, so
        only deleting the app and starting it again moves it.
      - In cluster mode there is no downtime. The app is first started from the ecosystem under the temporary name
        C(<name>-rehoming) beside the old processes (they share the port through PM2's cluster primary). Once it is
        stable the old processes are stopped, so that O(ready_url) is answered by the new release alone; if it does
        not answer in time, the old processes start again as they were and nothing is moved. Otherwise they are
        deleted, the app is started again under its own name, and the temporary one is deleted.
      - Cluster or fork is decided as PM2 decides it (C(exec_mode), else C(instances) on Node means cluster).
      - In fork mode two processes cannot listen on one port, so the old processes are deleted and the app is
        started from the ecosystem (a gap as long as its start, like C(pm2 reload) in fork mode; the module warns).
        When it does not become stable or answer O(ready_url), the old processes are started again from what PM2
        recorded of them (script, cwd, interpreter and arguments, limits, logs, environment), handed to pm2 on its
        standard input.
      - A run interrupted in the middle is finished by running the task again (a C(<name>-rehoming) app left
        behind is taken as the serving one).
      - Afterwards every process of the app must run from the ecosystem's cwd and script, or the task fails.
      - Needs O(ecosystem); with a C(.js) ecosystem in check mode, an app is predicted to move when its script is
        outside the ecosystem's directory.
    type: bool
    default: false
  save:
    description: Run C(pm2 save) after a change, so PM2's resurrect list matches.
    type: bool
    default: false
  pm2_home:
    description: PM2's home directory (C(PM2_HOME)). Defaults to the C(PM2_HOME) environment variable or C(~/.pm2).
    type: path
  executable:
    description: The pm2 executable. Defaults to C(pm2) on C(PATH), then C(node_modules/.bin/pm2) under O(cwd).
    type: path
  node_executable:
    description: The node executable used to read C(.js) ecosystem files. Defaults to C(node) on C(PATH).
    type: path
  cwd:
    description: Directory to run pm2 in (where relative script paths in the ecosystem resolve). Defaults to the ecosystem's directory.
    type: path
  stable_for:
    description: Seconds every instance must stay online without restarting after a start, restart or reload.
    type: int
    default: 3
  ready_url:
    description:
      - An HTTP(S) URL that must answer with a 2xx status before the task succeeds (for example the health endpoint).
      - Credentials in it (V(http://user:password@host/health)) are sent as basic authentication and masked in
        messages, warnings and results.
    type: str
  timeout:
    description: Seconds to wait for stability and O(ready_url) before failing.
    type: int
    default: 60
  log_lines:
    description:
      - Lines of the app's error log quoted when it fails to come up, and of each app's error log when O(ready_url)
        does not answer 2xx in time.
    type: int
    default: 20
attributes:
  check_mode:
    support: full
    description:
      - Reads the process list and the ecosystem and reports what would be done.
      - Runs no pm2 command that changes anything, and does not start a PM2 daemon.
      - Runs nothing of the app's either. A C(.json) ecosystem is read; a C(.js) or C(.cjs) one is code (reading
        it runs it), so it is not read; app and env names are then not checked against it, and RV(unpredicted)
        says so.
  diff_mode:
    support: full
    description: Shows each app's status before and after.
notes:
  - Results never contain a process's environment (C(pm2 jlist) carries all of it, secrets included).
  - pm2, the PM2 daemon it may start and so every app get a minimal environment (C(PATH), C(HOME), locale,
    C(TZ), C(TMPDIR), C(NODE_PATH)/C(NODE_OPTIONS)/C(NODE_EXTRA_CA_CERTS) and a few more, plus C(PM2_HOME)),
    never the task's or the controller's (AWS keys, tokens, passwords). Give an app its variables in the
    ecosystem file's C(env)/C(env_<env>) blocks. A daemon that already runs keeps the environment it was
    started with, and cluster-mode apps inherit it; the module warns when that environment holds credentials.
  - In fork mode C(pm2 reload) is a restart; only cluster mode with the app online reloads without downtime.
  - For a reload that loses no request, a cluster-mode app should leave on C(SIGINT) by calling C(disconnect) on
    C(cluster.worker) and exit on the worker's C(disconnect) event. An app that exits as soon as its server's
    C(close) calls back can leave a connection that the PM2 primary had just handed to it unanswered; seen here
    under load, 7 requests hung in 25 reloads. The bundled sample app shows the handler.
seealso:
  - name: PM2 ecosystem file
    description: PM2's documentation of ecosystem files and environments.
    link: https://pm2.keymetrics.io/docs/usage/application-declaration/
author:
  - runbook.deploy contributors (@runbook-deploy)
'''

EXAMPLES = r'''
- name: Start the API and the sync worker with the production environment, waiting until the API answers
  runbook.deploy.pm2_service:
    name: [pfa-backend, pfa-sync-worker]
    ecosystem: /srv/app/current/ecosystem.config.js
    env: production
    ready_url: http://127.0.0.1:3000/health

- name: Zero-downtime reload of the API onto the new release's environment
  runbook.deploy.pm2_service:
    name: pfa-backend
    state: reloaded
    ecosystem: /srv/app/current/ecosystem.config.js
    env: production
    update_env: true
    stable_for: 5

- name: Move apps started by hand in a git checkout onto the release under current (no downtime in cluster mode)
  runbook.deploy.pm2_service:
    name: [pfa-backend, pfa-sync-worker]
    ecosystem: /srv/app/current/ecosystem.config.js
    env: production
    rehome: true
    ready_url: http://127.0.0.1:3000/health

- name: Pause the sync worker during the migration
  runbook.deploy.pm2_service:
    name: pfa-sync-worker
    state: stopped
'''

RETURN = r'''
processes:
  description: Every instance of the managed apps after the task (one entry per cluster instance). Never the environment.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: App name.
      type: str
      sample: pfa-backend
    pm_id:
      description: PM2 id.
      type: int
      sample: 0
    pid:
      description: Process id (0 when stopped).
      type: int
      sample: 4242
    status:
      description: PM2 status (online, stopped, errored, launching...).
      type: str
      sample: online
    restarts:
      description: PM2's restart counter.
      type: int
      sample: 0
    unstable_restarts:
      description: Restarts PM2 counted as unstable.
      type: int
      sample: 0
    uptime:
      description: Seconds since the instance started (0 when not online).
      type: float
      sample: 12.5
    memory:
      description: Resident memory in bytes.
      type: int
      sample: 55205888
    cpu:
      description: CPU percent.
      type: float
      sample: 0.5
    exec_mode:
      description: V(cluster) or V(fork).
      type: str
      sample: cluster
actions:
  description: What was done (or would be, in check mode) per app.
  returned: always
  type: dict
  sample: {"pfa-backend": "reload", "pfa-sync-worker": "none"}
rehomed:
  description:
    - The apps moved onto the ecosystem's cwd and script (O(rehome)), each with where it ran before. Empty when
      none moved; in check mode, the apps that would move.
  returned: always
  type: dict
  sample: {"pfa-backend": "/srv/pfa-vanguard/backend/dist/server.js"}
unpredicted:
  description:
    - In check mode, what could not be predicted without running anything of the app's (for example the app
      and env names, when the ecosystem is a C(.js) file, which is not executed). Empty otherwise.
  returned: always
  type: list
  elements: str
  sample: ["app and env names were not checked against ecosystem /srv/app/current/ecosystem.config.js: it is JavaScript, and reading it would run it"]
executed_commands:
  description: The pm2 commands run, in order.
  returned: always
  type: list
  elements: str
  sample: ["pm2 reload /srv/app/current/ecosystem.config.js --only pfa-backend --env production --update-env"]
'''

import json
import os
import shutil
import tempfile
import time
import traceback
from urllib.error import HTTPError

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.urls import open_url

from ansible_collections.runbook.deploy.plugins.module_utils import pm2 as pm2lib
from ansible_collections.runbook.deploy.plugins.module_utils.command import CommandError, CommandRunner, find_tool

WAITING_STATES = ('started', 'restarted', 'reloaded')


class Pm2Service(object):
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.runner = CommandRunner(module)
        self.pm2_home = self.p['pm2_home'] or os.environ.get('PM2_HOME') or os.path.join(os.environ.get('HOME', '/root'), '.pm2')
        self.env = {'PM2_HOME': self.pm2_home, 'PM2_DISABLE_VERSION_CHECK': '1'}
        # Where this run's part of PM2's own log begins (what a process Node refused to start wrote goes there).
        self.pm2_log_start = pm2lib.log_size(self.pm2_home)
        self.cwd = self.p['cwd'] or (os.path.dirname(os.path.abspath(self.p['ecosystem'])) if self.p['ecosystem'] else None)
        self.pm2 = None
        self.apps = None
        self.actions = None
        self.changed = False  # set once a command that changes PM2's state has been started
        self.unpredicted = []
        self.rehomed = {}
        # ready_url may carry user:password@: keep it out of everything the module prints or returns,
        # the arguments Ansible echoes back (invocation) included.
        module.no_log_values.update(pm2lib.url_credentials(self.p['ready_url']))

    # -- inputs ------------------------------------------------------------------------------
    def prepare(self):
        p = self.p
        if p['ecosystem'] and not os.path.isfile(p['ecosystem']):
            raise pm2lib.Pm2Error("ecosystem '%s' does not exist" % p['ecosystem'])
        if self.cwd and not os.path.isdir(self.cwd):
            raise pm2lib.Pm2Error("cwd '%s' is not a directory" % self.cwd)
        self.pm2 = p['executable'] or find_tool('pm2') or (
            self.cwd and find_tool('pm2', os.path.join(self.cwd, 'node_modules', '.bin')))
        if not self.pm2 or not os.access(self.pm2, os.X_OK):
            raise pm2lib.Pm2Error('pm2 was not found%s; install it (npm install pm2) or set executable'
                                  % (" at '%s'" % p['executable'] if p['executable'] else ' on PATH'))
        if p['stable_for'] < 0 or p['timeout'] < 1:
            raise pm2lib.Pm2Error('stable_for must be 0 or more and timeout 1 or more')
        if p['env'] and not p['ecosystem']:
            raise pm2lib.Pm2Error('env needs ecosystem: PM2 reads env_<name> blocks from the ecosystem file')
        if p['rehome'] and not p['ecosystem']:
            raise pm2lib.Pm2Error('rehome needs ecosystem: an app is moved onto the cwd and script it gives')
        if p['ecosystem'] and self.module.check_mode and not p['ecosystem'].endswith('.json'):
            # A JavaScript ecosystem is code: require()-ing it runs whatever it does (pm2 would too). Check
            # mode runs nothing of the app's, so it predicts from pm2 jlist and the names given instead.
            self.unpredicted.append(
                'app and env names were not checked against ecosystem %s: it is JavaScript, and reading it would '
                'run it; an app PM2 does not know yet is predicted to start' % p['ecosystem'])
        elif p['ecosystem']:
            self.apps = self.load_ecosystem(p['ecosystem'])
            known = [a['name'] for a in self.apps['apps']]
            for name in p['name']:
                if name not in known:
                    raise pm2lib.Pm2Error("app '%s' is not in ecosystem %s (it has: %s); PM2 would ignore it silently"
                                          % (name, p['ecosystem'], ', '.join(known)))
            if p['env']:
                # A name no app (and no deploy section) knows is a typo PM2 would ignore silently: refuse it.
                # An app of the list without that block runs on its plain env block, as PM2 does: say so.
                known_envs = set(self.apps['deploy_envs']).union(*[a['envs'] for a in self.apps['apps']])
                if p['env'] not in known_envs:
                    raise pm2lib.Pm2Error("ecosystem %s defines no env_%s in any app nor a deploy.%s section (it has: %s); "
                                          "PM2 would ignore --env %s silently"
                                          % (p['ecosystem'], p['env'], p['env'], ', '.join(sorted(known_envs)) or 'none',
                                             p['env']))
                for name in p['name']:
                    if p['env'] not in self.app(name)['envs'] and p['env'] not in self.apps['deploy_envs']:
                        self.module.warn("app '%s' has no env_%s block; PM2 runs it with its env block"
                                         % (name, p['env']))

    def load_ecosystem(self, path):
        if not os.path.isfile(path):
            raise pm2lib.Pm2Error("ecosystem '%s' does not exist" % path)
        if path.endswith('.json'):
            try:
                return pm2lib.json_ecosystem(path)
            except ValueError as exc:
                raise pm2lib.Pm2Error('ecosystem %s is not valid JSON: %s' % (path, exc))
        node = self.p['node_executable'] or find_tool('node')
        if not node:
            raise pm2lib.Pm2Error('node was not found on PATH; it is needed to read %s (set node_executable)' % path)
        rc, out, err = self.runner.run([node, '-e', pm2lib.ECOSYSTEM_READER, os.path.abspath(path)])
        if rc != 0:
            raise pm2lib.Pm2Error('could not load ecosystem %s with node: %s' % (path, pm2lib.node_error(err or out)))
        return pm2lib.parse_ecosystem(out, path)

    def app(self, name):
        return next(a for a in self.apps['apps'] if a['name'] == name)

    # -- PM2 ---------------------------------------------------------------------------------
    def jlist(self):
        if self.module.check_mode and not pm2lib.daemon_running(self.pm2_home):
            return []  # no daemon: nothing runs, and jlist would start one
        rc, out, err = self.runner.run([self.pm2, 'jlist'], env=self.env)
        if rc != 0:
            raise pm2lib.Pm2Error('pm2 jlist failed (PM2_HOME %s): %s' % (self.pm2_home, pm2lib.last_lines(err or out)))
        return pm2lib.parse_jlist(out)

    def pm2_cmd(self, verb, name):
        argv = [self.pm2, verb]
        if self.p['ecosystem'] and verb in ('start', 'restart', 'reload'):
            argv += [os.path.abspath(self.p['ecosystem']), '--only', name]
            if self.p['env']:
                argv += ['--env', self.p['env']]
        else:
            argv.append(name)
        if self.p['update_env'] and verb in ('restart', 'reload', 'start'):
            argv.append('--update-env')
        self.run_in_cwd(argv, 'pm2 %s %s' % (verb, name))

    def run_in_cwd(self, argv, step):
        rc, out, err = self.runner.run(argv, env=self.env, cwd=self.cwd)
        if rc != 0:
            raise CommandError('%s failed (exit code %s): %s' % (step, rc, pm2lib.last_lines(err or out)))

    # -- decisions ---------------------------------------------------------------------------
    def plan(self, procs):
        """{name: action} where action is start, stop, restart, reload, delete or none."""
        state = self.p['state']
        actions = {}
        for name in self.p['name']:
            mine = pm2lib.instances_of(procs, name)
            online = [i for i in mine if i.get('pm2_env', {}).get('status') == pm2lib.ONLINE]
            if not mine and not self.p['ecosystem'] and state != 'absent':
                raise pm2lib.Pm2Error("app '%s' is not known to PM2 (PM2_HOME %s); give ecosystem to start it"
                                      % (name, self.pm2_home))
            if self.p['rehome'] and state in WAITING_STATES and self.needs_rehome(name, procs):
                actions[name] = 'rehome'
            elif state == 'started':
                actions[name] = 'none' if mine and len(online) == len(mine) else 'start'
            elif state == 'stopped':
                actions[name] = 'stop' if online or any(
                    i.get('pm2_env', {}).get('status') in ('launching', 'errored', 'waiting restart') for i in mine) else 'none'
            elif state == 'restarted':
                actions[name] = 'restart' if mine else 'start'
            elif state == 'reloaded':
                actions[name] = 'reload' if mine else 'start'
            else:
                actions[name] = 'delete' if mine else 'none'
        return actions

    def home_of(self, name):
        """(cwd, script) the ecosystem gives an app; (None, None) when it was not read (check mode, .js)."""
        if not self.apps:
            return None, None
        return pm2lib.app_home(self.app(name), self.cwd)

    def needs_rehome(self, name, procs):
        if pm2lib.instances_of(procs, name + pm2lib.REHOME_SUFFIX):
            return True  # an interrupted re-home: its temporary app still runs
        cwd, script = self.home_of(name)
        mine = pm2lib.instances_of(procs, name)
        if cwd is None:
            here = os.path.realpath(self.cwd) + os.sep
            moving = [i for i in mine if not os.path.realpath(i.get('pm2_env', {}).get('pm_exec_path') or here)
                      .startswith(here)]
        else:
            moving = [i for i in mine if pm2lib.runs_elsewhere(i, cwd, script)]
        if moving:
            self.rehomed[name] = moving[0].get('pm2_env', {}).get('pm_exec_path') or ''
        return bool(moving)

    def apply(self, actions, procs):
        for name, action in actions.items():
            if action == 'none':
                continue
            if action == 'rehome':
                self.changed = True
                self.rehome(name, procs)
                continue
            mine = pm2lib.instances_of(procs, name)
            if action == 'reload' and mine and all(pm2lib.mode_of(i) == 'fork' for i in mine):
                self.module.warn("'%s' runs in fork mode: pm2 reload restarts it (downtime); use exec_mode cluster "
                                 "for zero-downtime reloads" % name)
            # Before the command: even when it, or the wait after it, fails, PM2 may have started, stopped or
            # restarted something, and the task must not say it changed nothing.
            self.changed = True
            self.pm2_cmd(action, name)

    def rehome(self, name, procs):
        """Move an app onto the ecosystem's cwd and script (see the rehome option): in cluster mode through a
        temporary app that serves beside the old processes, in fork mode by deleting and starting it."""
        bridge = name + pm2lib.REHOME_SUFFIX
        old = pm2lib.instances_of(procs, name)
        bridges = pm2lib.instances_of(procs, bridge)
        if pm2lib.is_cluster(self.app(name)) and all(pm2lib.mode_of(i) == 'cluster' for i in old):
            self.rehome_cluster(name, bridge, old, bridges)
        else:
            if old:
                self.module.warn("'%s' is moved in fork mode: two processes cannot share its port, so it is stopped and "
                                 "started again (a gap as long as its start); exec_mode cluster moves it without one" % name)
            self.rehome_fork(name, bridge, old, bridges)
        self.check_home(name)

    def rehome_cluster(self, name, bridge, old, bridges):
        cwd, script = self.home_of(name)
        # A re-run after an interruption between the start under its own name and the temporary app's delete.
        home = old and all(i.get('pm2_env', {}).get('status') == pm2lib.ONLINE
                           and not pm2lib.runs_elsewhere(i, cwd, script) for i in old)
        if not home:
            if not [i for i in bridges if i.get('pm2_env', {}).get('status') == pm2lib.ONLINE]:
                try:
                    if bridges:
                        self.run_in_cwd([self.pm2, 'delete', bridge], 'pm2 delete %s' % bridge)
                    self.start_renamed(name, bridge)
                    self.wait_stable([bridge], as_app={bridge: name})
                    self.until_listening(bridge, as_app=name)
                except (pm2lib.Pm2Error, CommandError) as exc:
                    self.delete_quietly(bridge)
                    raise pm2lib.Pm2Error('%s Nothing was moved: the old processes of %s still serve.' % (exc, name))
            if old:
                # Stopped, not deleted: the temporary app alone answers, so ready_url tells whether the new release
                # works; if it does not, the old processes start again exactly as they ran (PM2 keeps their settings).
                self.run_in_cwd([self.pm2, 'stop', name], 'pm2 stop %s' % name)
                if self.p['ready_url']:
                    try:
                        self.wait_ready(time.time() + self.p['timeout'], names=[bridge])
                    except pm2lib.Pm2Error as exc:
                        self.runner.run([self.pm2, 'restart', name], env=self.env, cwd=self.cwd)
                        self.delete_quietly(bridge)
                        raise pm2lib.Pm2Error('%s Nothing was moved: the old processes of %s were started again.'
                                              % (exc, name))
                self.run_in_cwd([self.pm2, 'delete', name], 'pm2 delete %s' % name)
            try:
                self.pm2_cmd('start', name)
                self.wait_stable([name])
                self.until_listening(name)
            except (pm2lib.Pm2Error, CommandError) as exc:
                self.delete_quietly(name)
                raise pm2lib.Pm2Error('%s The new release serves under the temporary name %s; run the task again '
                                      'once the cause is fixed, to finish the move.' % (exc, bridge))
        if bridges or not home:
            self.run_in_cwd([self.pm2, 'delete', bridge], 'pm2 delete %s' % bridge)

    def until_listening(self, name, as_app=None):
        """Return once the app's cluster workers listen, before the processes beside them go.

        PM2 says a cluster worker is online when its process starts, which can be seconds before its server
        listens; only a reload waits for the new workers' 'listening' event (or the app's 'ready' message with
        wait_ready), up to the app's listen_timeout, before it stops the workers they replace. So the freshly started
        workers are reloaded once: when that returns, the ones serving listen, as after any pm2 reload."""
        self.run_in_cwd([self.pm2, 'reload', name], 'pm2 reload %s' % name)
        self.wait_stable([name], as_app={name: as_app or name})

    def rehome_fork(self, name, bridge, old, bridges):
        if bridges:
            self.run_in_cwd([self.pm2, 'delete', bridge], 'pm2 delete %s' % bridge)
        if old:
            self.run_in_cwd([self.pm2, 'delete', name], 'pm2 delete %s' % name)
        try:
            self.pm2_cmd('start', name)
            self.wait_stable([name])
            if self.p['ready_url']:
                self.wait_ready(time.time() + self.p['timeout'])
        except (pm2lib.Pm2Error, CommandError) as exc:
            raise pm2lib.Pm2Error('%s %s' % (exc, self.restore(name, old)))

    def start_renamed(self, name, new_name):
        """pm2 start the ecosystem's app under another name, through a wrapper ecosystem that requires the real one
        (the app's settings stay the ecosystem's own; the wrapper holds no setting, no secret)."""
        wrapper_dir = tempfile.mkdtemp(prefix='pm2-rehome-')
        try:
            wrapper = os.path.join(wrapper_dir, 'ecosystem.config.js')
            with open(wrapper, 'w') as handle:
                handle.write(pm2lib.RENAMING_ECOSYSTEM % dict(path=json.dumps(os.path.abspath(self.p['ecosystem'])),
                                                              name=json.dumps(name), new_name=json.dumps(new_name)))
            argv = [self.pm2, 'start', wrapper, '--only', new_name]
            if self.p['env']:
                argv += ['--env', self.p['env']]
            if self.p['update_env']:
                argv.append('--update-env')
            self.run_in_cwd(argv, 'pm2 start %s (as %s)' % (name, new_name))
        finally:
            shutil.rmtree(wrapper_dir, ignore_errors=True)

    def delete_quietly(self, name):
        self.runner.run([self.pm2, 'delete', name], env=self.env, cwd=self.cwd)

    def restore(self, name, old):
        """Start an app's old processes again as they ran, after its start from the ecosystem failed in fork mode:
        their settings as PM2 recorded them, handed to `pm2 start -` on its standard input (the environment holds
        the app's secrets: never a command line, never a file)."""
        if not old:
            return 'It did not run before.'
        self.delete_quietly(name)
        config = pm2lib.restart_config(old)
        rc, out, err = self.runner.run([self.pm2, 'start', '-'], env=self.env, cwd=self.cwd,
                                       data=json.dumps({'apps': [config]}))
        where = '%s in %s' % (config.get('script'), config.get('cwd'))
        if rc != 0:
            return ('Starting the old processes again (%s) failed too: %s. %s is not running.'
                    % (where, pm2lib.last_lines(err or out), name))
        try:
            self.wait_stable([name])
        except pm2lib.Pm2Error as exc:
            return 'The old processes were started again as they ran (%s), but: %s' % (where, exc)
        return 'The old processes were started again as they ran (%s).' % where

    def check_home(self, name):
        cwd, script = self.home_of(name)
        stray = [i for i in pm2lib.instances_of(self.jlist(), name) if pm2lib.runs_elsewhere(i, cwd, script)]
        if stray:
            env = stray[0].get('pm2_env', {})
            raise pm2lib.Pm2Error("after the move, '%s' still runs %s in %s, not %s in %s"
                                  % (name, env.get('pm_exec_path'), env.get('pm_cwd'), script, cwd))

    def expected_instances(self, name, procs):
        if self.apps:
            wanted = self.app(name).get('instances')
            if isinstance(wanted, int) and wanted > 0:
                return wanted
            if wanted in (0, -1, 'max'):
                return os.cpu_count() or 1
        return max(1, len(pm2lib.instances_of(procs, name)))

    def wait_stable(self, names, as_app=None):
        """as_app: {name: ecosystem app} for an app started under another name (its instances are the app's)."""
        as_app = as_app or {}
        deadline = time.time() + self.p['timeout']
        procs = self.jlist()
        watches = dict((n, pm2lib.StabilityWatch(n, self.expected_instances(as_app.get(n, n), procs), self.p['stable_for']))
                       for n in names)
        pending = set(names)
        while True:
            for name in sorted(pending):
                verdict = watches[name].observe(procs)
                if verdict == 'stable':
                    pending.discard(name)
                elif verdict == 'crashing':
                    raise pm2lib.Pm2Error(self.crash_message(name, procs, 'is crash-looping'))
            if not pending:
                return procs
            if time.time() >= deadline:
                name = sorted(pending)[0]
                raise pm2lib.Pm2Error(self.crash_message(
                    name, procs, 'did not stay online for %ds within %ds' % (self.p['stable_for'], self.p['timeout'])))
            time.sleep(0.5)
            procs = self.jlist()

    def crash_message(self, name, procs, what):
        mine = pm2lib.instances_of(procs, name)
        states = ', '.join('%s/%s restarts=%s' % (i.get('pm_id'), i.get('pm2_env', {}).get('status'),
                                                  i.get('pm2_env', {}).get('restart_time')) for i in mine) or 'no instance'
        return "app '%s' %s (%s). Last lines of its error log:\n%s" % (name, what, states, self.error_log(mine))

    def error_log(self, instances):
        """The last log_lines lines of the error log of the first of an app's instances (they log the same errors)."""
        log = ''
        for inst in instances[:1]:
            log = pm2lib.tail(inst.get('pm2_env', {}).get('pm_err_log_path'), self.p['log_lines'])
        if log.strip():
            return log
        # Nothing there: a process Node refused to start (a bad node_args, an --env-file it cannot find) said why
        # before PM2 took its output, in PM2's own log.
        early = pm2lib.early_output(self.pm2_home, self.p['log_lines'], since=self.pm2_log_start)
        if early:
            return "(empty); what processes wrote before PM2 took their output (%s):\n%s" % (
                os.path.join(self.pm2_home, 'pm2.log'), early)
        return '(empty)'

    def wait_ready(self, deadline, names=None):
        url = self.p['ready_url']
        last = 'no answer'
        while True:
            try:
                response = open_url(url, timeout=5, validate_certs=True)
                status = response.getcode()
                if 200 <= status < 300:
                    return status
                last = 'HTTP %s' % status
            except HTTPError as exc:
                # The app answered: what it said (the start of its body) tells more than the status line.
                last = 'HTTP %s' % exc.code
                body = ' '.join(to_native(exc.read(300) or b'', errors='replace').split())
                if body:
                    last += ', answered: %s' % body[:200]
            except Exception as exc:  # pylint: disable=broad-except
                last = to_native(exc)
            if time.time() >= deadline:
                # The app's own words (a database it cannot reach, a module it cannot load) are in its error log.
                procs = self.jlist()
                logs = ''
                for name in names or self.p['name']:
                    mine = pm2lib.instances_of(procs, name)
                    if mine:
                        logs += "\nLast lines of %s's error log:\n%s" % (name, self.error_log(mine))
                raise pm2lib.Pm2Error(pm2lib.redact('ready_url %s did not answer 2xx within %ds: %s'
                                                    % (url, self.p['timeout'], last), url) + logs)
            time.sleep(0.5)

    def warn_tainted_daemon(self):
        """A daemon started before (by hand, or by an older run) keeps its environment, and cluster-mode apps
        inherit it whatever the module passes: say so, naming the variables (never their values)."""
        pid, names = pm2lib.daemon_secret_names(self.pm2_home)
        if names:
            self.module.warn('the PM2 daemon (pid %s, PM2_HOME %s) was started with credentials in its environment '
                             '(%s), which its cluster-mode apps inherit; to drop them, restart the daemon from a clean '
                             'environment: pm2 kill (it stops every app of this PM2_HOME), then run this task again'
                             % (pid, self.pm2_home, ', '.join(names)))

    def run(self):
        self.prepare()
        before = self.jlist()
        self.warn_tainted_daemon()
        actions = self.actions = self.plan(before)
        changed = any(a != 'none' for a in actions.values())
        result = dict(changed=changed, actions=actions, unpredicted=self.unpredicted, rehomed=self.rehomed)
        after = before
        if changed and not self.module.check_mode:
            started = time.time()
            self.apply(actions, before)
            # A moved app was waited for in its move, its readiness included.
            waiting = [n for n, a in actions.items() if a in ('start', 'restart', 'reload')]
            after = self.wait_stable(waiting) if waiting else self.jlist()
            if self.p['ready_url'] and (waiting or 'rehome' in actions.values()):
                self.wait_ready(max(started + self.p['timeout'], time.time() + 5))
            self.warn_stale_paths(after, waiting)
            if self.p['save']:
                self.run_in_cwd([self.pm2, 'save', '--force'], 'pm2 save')
        elif not changed and self.p['ready_url'] and self.p['state'] in WAITING_STATES and not self.module.check_mode:
            self.wait_ready(time.time() + self.p['timeout'])
        now = time.time()
        result['processes'] = [pm2lib.summarize(p, now) for name in self.p['name'] for p in pm2lib.instances_of(after, name)]
        if self.module._diff:
            result['diff'] = dict(before=self.statuses(before), after=self.predicted(actions) if self.module.check_mode
                                  else self.statuses(after))
        return result

    def warn_stale_paths(self, procs, names):
        """PM2 keeps a script's path across reloads: say so when it runs code from outside the ecosystem's directory."""
        if not self.p['ecosystem']:
            return
        here = os.path.realpath(os.path.dirname(self.p['ecosystem']))
        for name in names:
            for inst in pm2lib.instances_of(procs, name)[:1]:
                script = inst.get('pm2_env', {}).get('pm_exec_path') or ''
                if script and not os.path.realpath(script).startswith(here + os.sep):
                    self.module.warn("'%s' runs %s, outside %s: PM2 keeps a script's path across reloads, so a release "
                                     "switch does not reach it; set cwd in the ecosystem to the path through the current "
                                     "symlink" % (name, script, here))

    def statuses(self, procs):
        out = {}
        for name in self.p['name']:
            mine = pm2lib.instances_of(procs, name)
            out[name] = ', '.join(sorted(i.get('pm2_env', {}).get('status') or '?' for i in mine)) or 'absent'
        return out

    def predicted(self, actions):
        after = {'start': 'online', 'restart': 'online', 'reload': 'online', 'rehome': 'online', 'stop': 'stopped',
                 'delete': 'absent'}
        return dict((n, after.get(a, 'unchanged')) for n, a in actions.items())


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='list', elements='str', required=True),
            state=dict(type='str', default='started', choices=['started', 'stopped', 'restarted', 'reloaded', 'absent']),
            ecosystem=dict(type='path'),
            env=dict(type='str'),
            update_env=dict(type='bool', default=False),
            rehome=dict(type='bool', default=False),
            save=dict(type='bool', default=False),
            pm2_home=dict(type='path'),
            executable=dict(type='path'),
            node_executable=dict(type='path'),
            cwd=dict(type='path'),
            stable_for=dict(type='int', default=3),
            ready_url=dict(type='str'),
            timeout=dict(type='int', default=60),
            log_lines=dict(type='int', default=20),
        ),
        supports_check_mode=True,
    )
    service = Pm2Service(module)
    base = dict(changed=False, executed_commands=service.runner.executed, unpredicted=service.unpredicted,
                rehomed=service.rehomed)
    if not module.params['name'] or not all(module.params['name']):
        module.fail_json(msg='name must list at least one app name', **base)

    def failed():
        # changed tells whether a start, stop, restart, reload or delete had been run before the failure.
        result = dict(base)
        result['changed'] = service.changed
        if service.actions:
            result['actions'] = service.actions
        return result
    try:
        result = service.run()
    except (pm2lib.Pm2Error, CommandError) as exc:
        module.fail_json(msg=pm2lib.redact(to_native(exc), module.params['ready_url']), **failed())
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='pm2_service failed unexpectedly: %s' % pm2lib.redact(to_native(exc), module.params['ready_url']),
                         exception=traceback.format_exc(), **failed())
    base.update(result)
    module.exit_json(**base)


if __name__ == '__main__':
    main()
