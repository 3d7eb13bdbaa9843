# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PM2 helpers for runbook.deploy: process lists, ecosystem files, stability checks.

``pm2 jlist`` carries each process's whole environment in ``pm2_env``: only the fields named in
``summarize`` ever leave this file.
"""

from __future__ import annotations

import json
import os
import re
import time

try:
    from urllib.parse import urlsplit, urlunsplit, unquote
except ImportError:  # pragma: no cover
    from urlparse import urlsplit, urlunsplit
    from urllib import unquote

from ansible_collections.runbook.deploy.plugins.module_utils.command import is_secret_name, last_lines

MASK = '********'

# Print an ecosystem file's apps as JSON: names, modes, instances, the env names each app knows, and where it runs
# (cwd and script as written; PM2 resolves them against the directory pm2 runs in).
ECOSYSTEM_READER = r'''
const path = require('path');
const file = path.resolve(process.argv[1]);
const config = require(file);
let apps = config.apps || config;
if (!Array.isArray(apps)) { apps = [apps]; }
const out = apps.map((app) => ({
  name: app.name,
  exec_mode: app.exec_mode || app.execMode || null,
  instances: app.instances === undefined ? 1 : app.instances,
  envs: Object.keys(app).filter((k) => k.startsWith('env_')).map((k) => k.slice(4)),
  instances_given: app.instances === undefined ? null : app.instances,
  interpreter: app.interpreter || app.exec_interpreter || null,
  cwd: typeof app.cwd === 'string' ? app.cwd : null,
  script: typeof app.script === 'string' ? app.script : null,
}));
console.log(JSON.stringify({apps: out, deploy_envs: Object.keys(config.deploy || {})}));
'''

# An ecosystem of one app: the named app of the real ecosystem file under another name, nothing else changed.
RENAMING_ECOSYSTEM = r'''
const config = require(%(path)s);
let apps = config.apps || config;
if (!Array.isArray(apps)) { apps = [apps]; }
module.exports = {
  apps: apps.filter((app) => app.name === %(name)s).map((app) => Object.assign({}, app, {name: %(new_name)s})),
  deploy: config.deploy,
};
'''

ONLINE = 'online'


class Pm2Error(Exception):
    """A PM2 step failed; the message is ready for fail_json."""


def parse_jlist(text):
    """The process list from ``pm2 jlist`` output, which may start with daemon spawn lines."""
    for line in reversed((text or '').strip().splitlines()):
        line = line.strip()
        if line.startswith('['):
            try:
                data = json.loads(line)
            except ValueError:
                break
            if isinstance(data, list):
                return data
            break
    raise Pm2Error('pm2 jlist did not print a JSON process list: %s' % last_lines(text, 3))


def node_error(text):
    """The line naming a Node error (SyntaxError: ...) and where it happened, or the last lines."""
    lines = [line for line in (text or '').splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if re.match(r'^\w*Error\b', line.strip()):
            where = lines[0] if lines and lines[0].startswith('/') else ''
            return ('%s (%s)' % (line.strip(), where)) if where else line.strip()
    return last_lines(text, 4)


def parse_ecosystem(text, path):
    try:
        data = json.loads(text.strip().splitlines()[-1])
        apps = data['apps']
    except (ValueError, KeyError, IndexError, TypeError):
        raise Pm2Error('could not read the apps of ecosystem %s: %s' % (path, last_lines(text, 3)))
    for app in apps:
        if not app.get('name'):
            raise Pm2Error('ecosystem %s has an app without a name; PM2 needs a name for --only' % path)
    return data


def json_ecosystem(path):
    """Apps of a .json ecosystem file without Node."""
    with open(path) as handle:
        config = json.load(handle)
    apps = config.get('apps', config) if isinstance(config, dict) else config
    apps = apps if isinstance(apps, list) else [apps]
    return dict(apps=[dict(name=a.get('name'), exec_mode=a.get('exec_mode'), instances=a.get('instances', 1),
                           envs=[k[4:] for k in a if k.startswith('env_')], cwd=a.get('cwd'), script=a.get('script'),
                           instances_given=a.get('instances'), interpreter=a.get('interpreter') or a.get('exec_interpreter'))
                      for a in apps],
                deploy_envs=list(config.get('deploy', {})) if isinstance(config, dict) else [])


def mode_of(proc):
    mode = proc.get('pm2_env', {}).get('exec_mode', '')
    return 'cluster' if mode.startswith('cluster') else 'fork'


def summarize(proc, now=None):
    """What may be returned about one process instance: never its environment."""
    env = proc.get('pm2_env', {})
    monit = proc.get('monit', {}) or {}
    now = now or time.time()
    uptime = env.get('pm_uptime')
    status = env.get('status')
    return dict(
        name=proc.get('name'), pm_id=proc.get('pm_id'), pid=proc.get('pid'), status=status,
        restarts=env.get('restart_time', 0), unstable_restarts=env.get('unstable_restarts', 0),
        uptime=round(max(0.0, now - uptime / 1000.0), 1) if uptime and status == ONLINE else 0,
        memory=monit.get('memory'), cpu=monit.get('cpu'), exec_mode=mode_of(proc),
    )


def instances_of(procs, name):
    return [p for p in procs if p.get('name') == name]


# The name an app's new processes run under while its old ones still serve, during a cluster-mode re-home.
REHOME_SUFFIX = '-rehoming'


def app_home(app, run_dir):
    """(cwd, script) where PM2 runs an ecosystem app started by pm2 from run_dir, as PM2's prepareAppConf
    resolves them: cwd against the directory pm2 runs in (which Node reports with symlinks resolved), then the
    script against cwd. Paths are not resolved any further (PM2 keeps a cwd given through a symlink as written)."""
    here = os.path.realpath(run_dir)
    cwd = app.get('cwd')
    cwd = os.path.normpath(os.path.join(here, cwd)) if cwd else here
    script = app.get('script')
    return cwd, (os.path.normpath(os.path.join(cwd, script)) if script else None)


def runs_elsewhere(proc, cwd, script):
    """Whether a process runs from another directory or script than (cwd, script): PM2 keeps both across
    reloads and restarts, so only deleting and starting it again moves it (a hand-started app, an old release)."""
    env = proc.get('pm2_env', {})
    if cwd and os.path.normpath(env.get('pm_cwd') or '') != cwd:
        return True
    return bool(script and os.path.isfile(script) and os.path.normpath(env.get('pm_exec_path') or '') != script)


# What PM2 adds to an app's recorded environment; the rest is what the app was started with.
_PM2_ENV_KEYS = ('unique_id', 'PM2_HOME', 'PM2_USAGE', 'PM2_INTERACTOR_PROCESSING', 'PM2_JSON_PROCESSING',
                 'NODE_APP_INSTANCE', 'pm_id', '_')
# Settings of a process as PM2 records them (pm2 jlist's pm2_env) -> the ecosystem option that sets them.
_RESTART_KEYS = dict(
    (k, k) for k in ('name', 'namespace', 'args', 'node_args', 'interpreter_args', 'exec_mode', 'max_memory_restart',
                     'kill_timeout', 'listen_timeout', 'wait_ready', 'autorestart', 'max_restarts', 'min_uptime',
                     'restart_delay', 'exp_backoff_restart_delay', 'merge_logs', 'log_date_format', 'cron_restart',
                     'time', 'source_map_support', 'treekill', 'shutdown_with_message', 'stop_exit_codes',
                     'instance_var', 'filter_env', 'watch', 'ignore_watch'))
_RESTART_KEYS.update(pm_exec_path='script', pm_cwd='cwd', exec_interpreter='interpreter', pm_out_log_path='out_file',
                     pm_err_log_path='error_file', pm_pid_path='pid_file')


def restart_config(instances):
    """An ecosystem app that starts a process again as it ran: its script, cwd, interpreter and their arguments,
    mode, instance count, logs, restart policy and environment, from what PM2 recorded of it (pm2 jlist)."""
    env = instances[0].get('pm2_env', {})
    config = dict((option, env[key]) for key, option in _RESTART_KEYS.items() if env.get(key) not in (None, ''))
    if mode_of(instances[0]) == 'cluster':
        config['instances'] = len(instances)
    name = config.get('name')
    config['env'] = dict((k, v) for k, v in (env.get('env') or {}).items()
                         if k not in _PM2_ENV_KEYS and k != name and isinstance(v, str))
    return config


def is_cluster(app):
    """Whether PM2 runs an ecosystem app in cluster mode (its Common.sink.determineExecMode): as its exec_mode says,
    else when it sets instances and runs on Node (or Bun)."""
    mode = app.get('exec_mode') or ''
    if mode:
        return mode.startswith('cluster')
    instances = app.get('instances_given')
    if instances is None or isinstance(instances, bool):
        return False
    if not (instances == 'max' or (isinstance(instances, int) and (instances >= 1 or instances in (0, -1)))):
        return False
    interpreter = os.path.basename(app.get('interpreter') or '')
    if interpreter:
        return interpreter.endswith(('node', 'bun'))
    return os.path.splitext(app.get('script') or '')[1] in ('', '.js', '.cjs', '.mjs')


def daemon_running(pm2_home):
    """Whether a PM2 daemon runs for pm2_home (so that jlist will not spawn one)."""
    try:
        with open(os.path.join(pm2_home, 'pm2.pid')) as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def url_credentials(url):
    """The secrets a URL carries in its userinfo (user:password@), as written and decoded; [] if none."""
    try:
        parts = urlsplit(url or '')
    except ValueError:
        return []
    userinfo = parts.netloc.rpartition('@')[0] if '@' in parts.netloc else ''
    if not userinfo:
        return []
    found = [userinfo, unquote(userinfo)]
    password = userinfo.partition(':')[2]
    if password:
        found += [password, unquote(password)]
    return sorted(set(v for v in found if v), key=len, reverse=True)


def redact_url(url):
    """url with its userinfo (user:password@) replaced by a mask, for messages."""
    try:
        parts = urlsplit(url or '')
    except ValueError:
        return MASK
    if '@' not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc='%s@%s' % (MASK, parts.netloc.rpartition('@')[2])))


def redact(text, url):
    """text with url shown redacted, and any credential of url masked wherever else it appears."""
    text = (text or '').replace(url, redact_url(url)) if url else (text or '')
    for secret in url_credentials(url):
        text = text.replace(secret, MASK)
    return text


def daemon_secret_names(pm2_home):
    """(pid, names) of the credential-like variables in the environment of the PM2 daemon for pm2_home.

    Only names: the values stay where they are.  (None, []) when no daemon runs or it cannot be read.
    """
    try:
        with open(os.path.join(pm2_home, 'pm2.pid')) as handle:
            pid = int(handle.read().strip())
        with open('/proc/%d/environ' % pid, 'rb') as handle:
            data = handle.read()
    except (OSError, ValueError):
        return None, []
    names = [item.split(b'=', 1)[0].decode('utf-8', 'replace') for item in data.split(b'\0') if b'=' in item]
    return pid, sorted(n for n in names if is_secret_name(n))


def _read_end(path, limit, since=0):
    """The text of a log file from offset since (from its start when it is now smaller: rotated), at most its last
    limit bytes; '' when it cannot be read."""
    if not path:
        return ''
    try:
        with open(path, 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            start = since if 0 < since <= size else 0
            handle.seek(max(start, size - limit))
            return handle.read().decode('utf-8', 'replace')
    except OSError:
        return ''


def tail(path, lines=20):
    """Last lines of a log file, or '' when it cannot be read."""
    return '\n'.join(_read_end(path, 64 * 1024).splitlines()[-lines:])


# A line PM2 itself wrote to its daemon log (PM2_HOME/pm2.log): "2026-12-06T17:02:20: PM2 log: App [api:0] online".
_PM2_OWN_LINE = re.compile(r'^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?: PM2 ')


def log_size(pm2_home):
    """The size of PM2's daemon log now (0 when there is none yet): where this run's part of it will begin."""
    try:
        return os.path.getsize(os.path.join(pm2_home, 'pm2.log'))
    except OSError:
        return 0


def early_output(pm2_home, lines=20, since=0):
    """What processes wrote before PM2 took their output over, from PM2's daemon log, after offset since (the log's
    size when this run began: an old, fixed crash or another app's earlier output is not this one's).

    Node refuses an option or a file before any of the app's code runs (`node: .env: not found` for
    `--env-file=.env` relative to the daemon's directory in cluster mode, `bad option`): that goes to the daemon's
    own log, interleaved with PM2's lines, and the app's error log stays empty. The lines that are not PM2's own,
    each once (a crash loop repeats them), the newest last."""
    # Only this run's part, and at most its last 256 KiB.
    text = _read_end(os.path.join(pm2_home, 'pm2.log'), 256 * 1024, since)
    raw = [line.rstrip() for line in text.splitlines() if line.strip() and not _PM2_OWN_LINE.match(line)]
    newest_first = list(dict.fromkeys(reversed(raw)))
    return '\n'.join(reversed(newest_first[:lines]))


class StabilityWatch(object):
    """Decide from successive process lists whether an app is up and has stopped restarting.

    Stable: every instance online, as many as expected, none restarted during the last ``stable_for``
    seconds and each up for at least that long. Crash-looping: restarts keep climbing or PM2 marks the
    app errored.
    """

    def __init__(self, name, expected, stable_for, clock=time.time):
        self.name = name
        self.expected = expected
        self.stable_for = stable_for
        self.clock = clock
        self.first_restarts = None
        self.last_change = clock()
        self.last_state = None

    def observe(self, procs):
        """Return 'stable', 'waiting' or 'crashing'."""
        mine = instances_of(procs, self.name)
        restarts = sum(p.get('pm2_env', {}).get('restart_time', 0) for p in mine)
        statuses = sorted(p.get('pm2_env', {}).get('status') for p in mine)
        state = (restarts, tuple(statuses), tuple(sorted(p.get('pid') or 0 for p in mine)))
        now = self.clock()
        if self.first_restarts is None:
            self.first_restarts = restarts
        if state != self.last_state:
            self.last_state = state
            self.last_change = now
        if 'errored' in statuses or restarts - self.first_restarts >= 3:
            return 'crashing'
        if len(mine) < self.expected or any(s != ONLINE for s in statuses):
            return 'waiting'
        up_since = min(p.get('pm2_env', {}).get('pm_uptime') or 0 for p in mine) / 1000.0
        if now - self.last_change >= self.stable_for and now - up_since >= self.stable_for:
            return 'stable'
        return 'waiting'
