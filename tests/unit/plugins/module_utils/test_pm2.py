"""PM2 process lists, ecosystems and stability decisions (plugins/module_utils/pm2.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.runbook.deploy.plugins.module_utils import pm2


def proc(name, pm_id, status='online', restarts=0, uptime_ms=0, pid=100, mode='cluster_mode'):
    return {'name': name, 'pm_id': pm_id, 'pid': pid, 'monit': {'memory': 1024, 'cpu': 1.5},
            'pm2_env': {'status': status, 'restart_time': restarts, 'pm_uptime': uptime_ms, 'exec_mode': mode,
                        'SECRET_TOKEN': 'hunter2', 'env': {'DATABASE_URL': 'postgres://u:pw@h/db'}}}


def test_jlist_after_daemon_spawn_lines():
    text = '[PM2] Spawning PM2 daemon with pm2_home=/x\n[PM2] PM2 Successfully daemonized\n' + json.dumps([proc('api', 0)])
    assert [p['name'] for p in pm2.parse_jlist(text)] == ['api']


@pytest.mark.parametrize('text', ['', 'not json', '[PM2] Spawning\n[{"broken"'])
def test_jlist_garbage_is_an_error(text):
    with pytest.raises(pm2.Pm2Error, match='did not print a JSON process list'):
        pm2.parse_jlist(text)


def test_summary_never_carries_the_environment():
    summary = pm2.summarize(proc('api', 3, uptime_ms=1000 * 1000), now=1010)
    assert summary == dict(name='api', pm_id=3, pid=100, status='online', restarts=0, unstable_restarts=0, uptime=10.0,
                           memory=1024, cpu=1.5, exec_mode='cluster')
    assert 'hunter2' not in json.dumps(summary) and 'pw@' not in json.dumps(summary)


def test_ecosystem_output_is_validated():
    data = pm2.parse_ecosystem('{"apps": [{"name": "api", "envs": ["production"]}], "deploy_envs": []}', 'eco.js')
    assert data['apps'][0]['envs'] == ['production']
    with pytest.raises(pm2.Pm2Error, match='without a name'):
        pm2.parse_ecosystem('{"apps": [{"script": "x.js"}], "deploy_envs": []}', 'eco.js')
    with pytest.raises(pm2.Pm2Error, match='could not read the apps'):
        pm2.parse_ecosystem('Error: Cannot find module', 'eco.js')


def test_node_error_names_the_error_line():
    text = '/srv/eco.js:3\n  apps: [\n        ^\n\nSyntaxError: Unexpected end of input\n    at wrapSafe (node:internal)'
    assert pm2.node_error(text) == 'SyntaxError: Unexpected end of input (/srv/eco.js:3)'


class Clock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_stability_needs_all_instances_online_for_stable_for_seconds():
    clock = Clock()
    watch = pm2.StabilityWatch('api', expected=2, stable_for=3, clock=clock)
    assert watch.observe([proc('api', 0, uptime_ms=999000)]) == 'waiting'  # one of two instances
    both = [proc('api', 0, uptime_ms=999000, pid=1), proc('api', 1, uptime_ms=999000, pid=2)]
    clock.now += 1
    assert watch.observe(both) == 'waiting'  # just changed
    clock.now += 3
    assert watch.observe(both) == 'stable'


def test_restarts_reset_the_clock_and_a_crash_loop_is_reported():
    clock = Clock()
    watch = pm2.StabilityWatch('worker', expected=1, stable_for=2, clock=clock)
    assert watch.observe([proc('worker', 0, restarts=0, uptime_ms=990000)]) == 'waiting'
    clock.now += 5
    assert watch.observe([proc('worker', 0, restarts=1, uptime_ms=1004000, pid=7)]) == 'waiting'
    clock.now += 1
    assert watch.observe([proc('worker', 0, restarts=2, uptime_ms=1005000, pid=8)]) == 'waiting'
    clock.now += 1
    assert watch.observe([proc('worker', 0, restarts=3, uptime_ms=1006000, pid=9)]) == 'crashing'
    errored = pm2.StabilityWatch('worker', expected=1, stable_for=2, clock=clock)
    assert errored.observe([proc('worker', 0, status='errored')]) == 'crashing'


@pytest.mark.parametrize('url,shown,secrets', [
    ('http://deployer:s3cret@127.0.0.1:8080/health', 'http://********@127.0.0.1:8080/health', ['s3cret', 'deployer:s3cret']),
    ('https://ghp_token@example.com/ready?x=1', 'https://********@example.com/ready?x=1', ['ghp_token']),
    ('http://u%40corp:p%3Aw%40rd@h/x', 'http://********@h/x', ['p:w@rd', 'p%3Aw%40rd', 'u@corp:p:w@rd']),
    ('http://127.0.0.1:3000/health', 'http://127.0.0.1:3000/health', []),
    ('http://h/path@not-userinfo', 'http://h/path@not-userinfo', []),
])
def test_ready_url_credentials_are_redacted(url, shown, secrets):
    assert pm2.redact_url(url) == shown
    assert set(secrets) <= set(pm2.url_credentials(url))
    text = pm2.redact('ready_url %s failed: %s' % (url, ' '.join(secrets)), url)
    assert text.startswith('ready_url %s failed' % shown)
    assert not any(s in text for s in secrets), text


def test_daemon_secret_names_reads_names_only(tmp_path):
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'],
                             env={'PATH': os.environ['PATH'], 'AWS_SECRET_ACCESS_KEY': 'canary', 'LANG': 'C'})
    try:
        (tmp_path / 'pm2.pid').write_text(str(child.pid))
        assert pm2.daemon_secret_names(str(tmp_path)) == (child.pid, ['AWS_SECRET_ACCESS_KEY'])
    finally:
        child.kill()
        child.wait()
    assert pm2.daemon_secret_names(str(tmp_path / 'nowhere')) == (None, [])


def test_early_output_is_what_node_said_before_pm2_took_its_output(tmp_path):
    """Node refusing --env-file=.env (relative to the daemon's directory in cluster mode) writes to PM2's own log; the
    app's error log stays empty. Seen deploying tests/fixtures/notes_app: the failure said only '(empty)'."""
    (tmp_path / 'pm2.log').write_text(
        '2026-12-06T17:02:20: PM2 log: App [notes-api:0] starting in -cluster mode-\n'
        '/usr/bin/node: .env: not found\n'
        '2026-12-06T17:02:20: PM2 log: App [notes-api:0] exited with code [9] via signal [SIGINT]\n'
        '/usr/bin/node: .env: not found\n'
        '2026-12-06T17:02:21.123+00:00: PM2 error: Script had too many unstable restarts (16). Stopped.\n'
        'node: bad option: --inspekt\n')
    assert pm2.early_output(str(tmp_path)) == '/usr/bin/node: .env: not found\nnode: bad option: --inspekt'
    assert pm2.early_output(str(tmp_path), lines=1) == 'node: bad option: --inspekt'
    assert pm2.early_output(str(tmp_path / 'no-such-home')) == ''


def test_early_output_is_only_this_runs_part_of_the_log(tmp_path):
    """An old, already fixed crash (or another app's earlier output) is not quoted as this run's."""
    log = tmp_path / 'pm2.log'
    log.write_text('node: .env: not found\n2026-12-06T17:02:20: PM2 log: App [old:0] online\n')
    start = pm2.log_size(str(tmp_path))
    assert pm2.early_output(str(tmp_path), since=start) == ''
    with open(log, 'a') as handle:
        handle.write('node: bad option: --inspekt\n')
    assert pm2.early_output(str(tmp_path), since=start) == 'node: bad option: --inspekt'
    assert pm2.log_size(str(tmp_path / 'none')) == 0


@pytest.mark.parametrize('app,cluster', [
    ({'exec_mode': 'cluster', 'script': 'a.js'}, True),
    ({'exec_mode': 'cluster_mode', 'script': 'a.js'}, True),
    ({'exec_mode': 'fork', 'instances_given': 4, 'script': 'a.js'}, False),
    # PM2's determineExecMode: instances without exec_mode runs a Node script in cluster mode.
    ({'instances_given': 2, 'script': 'server.js'}, True),
    ({'instances_given': 'max', 'script': 'server.js'}, True),
    ({'instances_given': 0, 'script': 'server.js'}, True),
    ({'instances_given': None, 'script': 'server.js'}, False),
    ({'instances_given': 2, 'script': 'run.sh', 'interpreter': 'bash'}, False),
    ({'instances_given': 2, 'script': 'app', 'interpreter': '/usr/local/bin/node'}, True),
])
def test_is_cluster_follows_pm2s_own_rule(app, cluster):
    assert pm2.is_cluster(app) is cluster


def test_restart_config_is_the_process_as_pm2_recorded_it_without_pm2s_own_variables():
    proc = {'name': 'solo', 'pm2_env': {
        'name': 'solo', 'pm_exec_path': '/srv/hand/server.js', 'pm_cwd': '/srv/hand', 'args': ['--port', '4000'],
        'node_args': ['--max-old-space-size=256', '--env-file=/srv/hand/.env'], 'exec_interpreter': 'node',
        'exec_mode': 'fork_mode', 'instances': 1, 'max_memory_restart': 268435456, 'pm_out_log_path': '/l/out.log',
        'pm_err_log_path': '/l/err.log', 'pm_id': 3, 'status': 'online', 'restart_time': 7,
        'env': {'PORT': '4000', 'SECRET': 's3cr3t', 'solo': '{}', 'unique_id': 'u', 'PM2_HOME': '/p', 'pm_id': '3'}}}
    config = pm2.restart_config([proc])
    assert config == {'name': 'solo', 'script': '/srv/hand/server.js', 'cwd': '/srv/hand', 'args': ['--port', '4000'],
                      'node_args': ['--max-old-space-size=256', '--env-file=/srv/hand/.env'], 'interpreter': 'node',
                      'exec_mode': 'fork_mode', 'max_memory_restart': 268435456, 'out_file': '/l/out.log',
                      'error_file': '/l/err.log', 'env': {'PORT': '4000', 'SECRET': 's3cr3t'}}
    cluster = dict(proc, pm2_env=dict(proc['pm2_env'], exec_mode='cluster_mode', instances=0))
    assert pm2.restart_config([cluster, cluster, cluster])['instances'] == 3
