"""No child process of a module inherits the controller's credentials (issue 15, item 8).

Canary credentials are put into the environment Ansible runs the module with (as a controller with AWS keys
and a task `environment:` would); the test then reads the environment of what the module started: the PM2
daemon and the apps (which outlive the run), and the migration tools (through a wrapper that records its own
/proc/self/environ and then runs the real tool or the Flyway test double).  What the child needs (the app's
ecosystem env, the tool's connection variables) must still be there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from helpers import REPO

PM2 = os.path.join(REPO, 'node_modules', '.bin', 'pm2')
FIXTURES = os.path.join(REPO, 'tests', 'fixtures')
FLYWAY_DOUBLE = os.path.join(REPO, 'tests', 'doubles', 'flyway', 'flyway')
PRISMA_CLI = os.path.join(REPO, 'node_modules', '.bin', 'prisma')


@pytest.fixture
def canaries(monkeypatch):
    """Credentials in the environment the module runs with; returns {name: value}."""
    tag = uuid.uuid4().hex[:10]
    values = {
        'AWS_SECRET_ACCESS_KEY': 'canary-aws-%s' % tag,
        'FOO_PASSWORD': 'canary-foo-%s' % tag,
        'DEPLOY_API_TOKEN': 'canary-token-%s' % tag,
        'DATABASE_URL': 'postgresql://app:canary-db-%s@db.invalid/app' % tag,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def read_environ(pid):
    with open('/proc/%d/environ' % pid, 'rb') as handle:
        data = handle.read().decode('utf-8', 'replace')
    return dict(item.split('=', 1) for item in data.split('\0') if '=' in item)


def leaks(env, canaries, passed=()):
    """Canary names (but those the module passes on purpose) or values found in an environment."""
    found = sorted(n for n in canaries if n in env and n not in passed)
    found += sorted('%s (value of %s)' % (k, n) for k, v in env.items() for n, c in canaries.items() if c in v)
    return found


def clean_env(**extra):
    """The test's own pm2 calls: no canary of the test process reaches them."""
    return dict(PATH=os.environ['PATH'], HOME=os.environ.get('HOME', '/root'), **extra)


# -- PM2: the daemon and the apps -----------------------------------------------------------------
ECOSYSTEM = """module.exports = {
  apps: [
    {name: '%(cluster)s', script: './env_dump.js', exec_mode: 'cluster', instances: 2,
     env: {ENV_DUMP_DIR: '%(dumps)s', APP_SETTING: 'from-ecosystem'}, env_production: {APP_STAGE: 'production'}},
    {name: '%(fork)s', script: './env_dump.js', env: {ENV_DUMP_DIR: '%(dumps)s', APP_SETTING: 'fork-setting'},
     env_production: {APP_STAGE: 'production'}},
  ],
};
"""


@pytest.fixture
def pm2_app(tmp_path):
    directory = tmp_path / 'app'
    shutil.copytree(os.path.join(FIXTURES, 'pm2'), str(directory))
    dumps = tmp_path / 'dumps'
    dumps.mkdir()
    names = dict(cluster='envc-%s' % uuid.uuid4().hex[:8], fork='envf-%s' % uuid.uuid4().hex[:8], dumps=str(dumps))
    (directory / 'ecosystem.config.js').write_text(ECOSYSTEM % names)
    # A private daemon (PM2's unix sockets need a short path, hence /tmp rather than tmp_path).
    home = tempfile.mkdtemp(prefix='pm2-env-', dir='/tmp')
    open(os.path.join(home, 'touch'), 'w').close()  # no first-run version check
    yield dict(names, ecosystem=str(directory / 'ecosystem.config.js'), home=home)
    subprocess.run([PM2, 'kill'], env=clean_env(PM2_HOME=home), capture_output=True, check=False, timeout=60)
    shutil.rmtree(home, ignore_errors=True)


def test_pm2_daemon_and_apps_never_inherit_the_controller_credentials(run_module, canaries, pm2_app):
    result = run_module('runbook.deploy.pm2_service', name=[pm2_app['cluster'], pm2_app['fork']],
                        ecosystem=pm2_app['ecosystem'], env='production', pm2_home=pm2_app['home'], executable=PM2,
                        stable_for=1, timeout=30)
    assert result.get('failed') is not True, result
    with open(os.path.join(pm2_app['home'], 'pm2.pid')) as handle:
        daemon = int(handle.read().strip())
    daemon_env = read_environ(daemon)
    assert leaks(daemon_env, canaries) == [], 'the PM2 daemon (which outlives the run) inherited credentials'
    assert daemon_env.get('PM2_HOME') == pm2_app['home']

    procs = [p for p in result['processes'] if p['pid']]
    assert sorted(p['name'] for p in procs) == sorted([pm2_app['cluster']] * 2 + [pm2_app['fork']]), result
    for proc in procs:
        # The process's environment as the kernel holds it (cluster workers: the daemon's, plus PM2's own JSON)...
        env = read_environ(proc['pid'])
        assert leaks(env, canaries) == [], 'app %s (pid %s) inherited credentials' % (proc['name'], proc['pid'])
        # ... and process.env as the app sees it once PM2 has set it up, which the app wrote down at start.
        with open(os.path.join(pm2_app['dumps'], '%d.json' % proc['pid'])) as handle:
            seen = json.load(handle)
        assert leaks(seen, canaries) == [], 'app %s sees credentials in process.env' % proc['name']
        # What the app needs comes from its ecosystem file, and still arrives.
        expected = 'from-ecosystem' if proc['name'] == pm2_app['cluster'] else 'fork-setting'
        assert (seen.get('APP_STAGE'), seen.get('APP_SETTING')) == ('production', expected), sorted(seen)
    assert not leaks({'result': json.dumps(result)}, canaries)


# -- Flyway (the test double) ------------------------------------------------------------------------
def recording_wrapper(path, record_dir, command):
    """A shell script that saves its environment (as the tool would see it), then execs command "$@"."""
    path.write_text('#!/bin/sh\ncat /proc/$$/environ > %s/env.$$\nexec %s "$@"\n' % (record_dir, command))
    path.chmod(0o755)
    return str(path)


def recorded(record_dir):
    files = sorted(os.listdir(str(record_dir)))
    return [read_env_file(os.path.join(str(record_dir), f)) for f in files]


def read_env_file(path):
    with open(path, 'rb') as handle:
        data = handle.read().decode('utf-8', 'replace')
    return dict(item.split('=', 1) for item in data.split('\0') if '=' in item)


def test_flyway_gets_its_connection_and_no_controller_credential(run_module, canaries, make_db, stack, tmp_path):
    db = make_db('envfw', rows=None)
    migrations = tmp_path / 'db'
    migrations.mkdir()
    (migrations / 'V1__create.sql').write_text('CREATE TABLE canary_check (id int);\n')
    records = tmp_path / 'records'
    records.mkdir()
    executable = recording_wrapper(tmp_path / 'flyway', records, 'env FLYWAY_DOUBLE_VERSION=10 %s %s'
                                   % (sys.executable, FLYWAY_DOUBLE))
    result = run_module('runbook.deploy.flyway_migrate', command='migrate', executable=executable,
                        url='jdbc:postgresql://%s:%s/%s' % (stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db),
                        user=stack['RUNBOOK_PG_USER'], password=stack['RUNBOOK_PG_PASSWORD'],
                        locations=[str(migrations)], working_dir=str(tmp_path))
    assert result.get('failed') is not True and result['changed'] is True, result
    envs = recorded(records)
    assert envs, 'the Flyway wrapper never ran'
    for env in envs:
        assert leaks(env, canaries) == [], 'flyway inherited credentials'
        assert env['FLYWAY_PASSWORD'] == stack['RUNBOOK_PG_PASSWORD']
        assert env['FLYWAY_USER'] == stack['RUNBOOK_PG_USER'] and env['FLYWAY_URL'].endswith('/' + db)
        assert env['PATH'] == os.environ['PATH']


# -- Prisma (the real CLI) ------------------------------------------------------------------------------
@pytest.mark.slow
def test_prisma_gets_its_url_and_no_controller_credential(run_module, canaries, make_db, stack, tmp_path,
                                                          monkeypatch):
    # The migrate role hands the CLI its node_modules through NODE_PATH in the task's environment.
    monkeypatch.setenv('NODE_PATH', os.path.join(REPO, 'node_modules'))
    subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'scripts', 'prisma_setup.py')], check=True,
                   capture_output=True)
    project = tmp_path / 'app'
    shutil.copytree(os.path.join(FIXTURES, 'prisma', 'app'), str(project))
    os.symlink(os.path.join(REPO, 'node_modules'), str(project / 'node_modules'))
    db = make_db('envpr', rows=None)
    url = 'postgresql://%s:%s@%s:%s/%s' % (stack['RUNBOOK_PG_USER'], stack['RUNBOOK_PG_PASSWORD'],
                                           stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db)
    records = tmp_path / 'records'
    records.mkdir()
    executable = recording_wrapper(tmp_path / 'prisma', records, PRISMA_CLI)
    started = time.time()
    result = run_module('runbook.deploy.prisma_migrate', state='deployed', project_path=str(project), db_url=url,
                        executable=executable)
    assert result.get('failed') is not True and result['changed'] is True, (result, time.time() - started)
    envs = recorded(records)
    assert envs, 'the Prisma wrapper never ran'
    for env in envs:
        assert leaks(env, canaries, passed=('DATABASE_URL',)) == [], 'prisma inherited credentials'
        # DATABASE_URL is the module's own (the url option), not the controller's.
        assert ('/%s?' % db) in env['DATABASE_URL'] + '?' and 'canary' not in env['DATABASE_URL']
        assert env['NODE_PATH'] == os.path.join(REPO, 'node_modules')


def test_pm2_warns_about_a_daemon_started_with_credentials(run_module, canaries, pm2_app):
    # A daemon started by hand from a shell holding the keys (or by a run before this fix): it keeps them,
    # and its cluster-mode apps inherit them whatever the module passes. The module names them, not their values.
    spawned = subprocess.run([PM2, 'ping'], env=dict(os.environ, PM2_HOME=pm2_app['home']), capture_output=True,
                             text=True, timeout=60, check=False)
    assert spawned.returncode == 0, spawned.stderr
    result = run_module('runbook.deploy.pm2_service', name=[pm2_app['fork']], ecosystem=pm2_app['ecosystem'],
                        pm2_home=pm2_app['home'], executable=PM2, stable_for=1, timeout=30)
    assert result.get('failed') is not True, result
    warnings = [w for w in result.get('warnings', []) if 'started with credentials' in w]
    assert warnings and all(n in warnings[0] for n in ('AWS_SECRET_ACCESS_KEY', 'FOO_PASSWORD', 'pm2 kill')), result
    assert leaks({'result': json.dumps(result)}, canaries) == []
