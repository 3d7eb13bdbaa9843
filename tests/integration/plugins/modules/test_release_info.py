"""runbook.deploy.release_info against a real PM2 daemon (a private PM2_HOME) and a release layout on disk: what the
processes run is read from where they started, not from `current`; no environment leaves; no daemon is started."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from helpers import REPO, assert_clear_failure, free_port

MODULE = 'runbook.deploy.release_info'
PM2 = os.path.join(REPO, 'node_modules', '.bin', 'pm2')
FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'pm2')
SECRET = 'never-return-this-token'
# The apps start in `current` (as ecosystems written for a release layout do); PM2 is given the link, the kernel
# resolves it when each process starts. "other" runs outside the layout and is not asked for.
ECOSYSTEM = """module.exports = {
  apps: [
    {name: 'web', script: './server.js', cwd: %(current)s, env: {PORT: %(port)d, APP_VERSION: 'v1', SECRET_TOKEN: %(secret)s}},
    {name: 'jobs', script: './worker.js', cwd: %(current)s, env: {SECRET_TOKEN: %(secret)s}},
    {name: 'other', script: './worker.js', cwd: %(elsewhere)s},
  ],
};
"""


def _pm2(home, *args):
    return subprocess.run([PM2] + list(args), env=dict(os.environ, PM2_HOME=home), capture_output=True, text=True,
                          check=False, timeout=120)


def _release(layout, version, record=True):
    path = os.path.join(layout, 'releases', version)
    shutil.copytree(FIXTURES, path)
    if record:
        with open(os.path.join(path, 'RELEASE.json'), 'w') as handle:
            json.dump({'app': 'sample', 'version': version}, handle)
    return path


def _point_current(layout, version):
    link = os.path.join(layout, 'current.tmp')
    os.symlink(os.path.join(layout, 'releases', version), link)
    os.replace(link, os.path.join(layout, 'current'))


@pytest.fixture
def layout(tmp_path):
    """A release layout with v1 (current) and v2, and a private PM2 home (short path: PM2's sockets), killed after."""
    root = str(tmp_path / 'srv')
    v1 = _release(root, 'v1')
    v2 = _release(root, 'v2')
    _point_current(root, 'v1')
    elsewhere = str(tmp_path / 'elsewhere')
    shutil.copytree(FIXTURES, elsewhere)
    home = tempfile.mkdtemp(prefix='pm2-', dir='/tmp')
    open(os.path.join(home, 'touch'), 'w').close()  # no first-run version check
    ecosystem = os.path.join(root, 'ecosystem.config.js')
    with open(ecosystem, 'w') as handle:
        handle.write(ECOSYSTEM % dict(current=json.dumps(os.path.join(root, 'current')), port=free_port(),
                                      secret=json.dumps(SECRET), elsewhere=json.dumps(elsewhere)))
    yield dict(root=root, v1=v1, v2=v2, home=home, ecosystem=ecosystem)
    _pm2(home, 'kill')
    shutil.rmtree(home, ignore_errors=True)


def test_no_daemon_reads_the_record_and_starts_none(run_module, layout):
    result = run_module(MODULE, deploy_to=layout['root'], apps=['web', 'jobs'], pm2_home=layout['home'],
                        executable=PM2, current_record=os.path.join(layout['root'], 'current', 'RELEASE.json'))
    assert result.get('failed') is not True and result['changed'] is False, result
    assert result['processes'] == [] and result['running_releases'] == [] and result['records'] == {}
    assert result['current'] == {'app': 'sample', 'version': 'v1'} and result['pm2_error'] == ''
    assert not os.path.exists(os.path.join(layout['home'], 'pm2.pid')), 'a bare pm2 jlist would start a daemon'


def test_the_release_the_processes_started_in_not_where_current_points(run_module, layout):
    started = _pm2(layout['home'], 'start', layout['ecosystem'])
    assert started.returncode == 0, started.stdout + started.stderr
    # A run killed between the switch and the reload: current on v2, the processes still run v1's code.
    _point_current(layout['root'], 'v2')

    for check in (False, True):
        result = run_module(MODULE, check=check, deploy_to=layout['root'] + '/', apps=['web', 'jobs', 'absent'],
                            pm2_home=layout['home'], executable=PM2,
                            current_record=os.path.join(layout['root'], 'current', 'RELEASE.json'))
        assert result['changed'] is False, result
        assert [p['name'] for p in result['processes']] == ['web', 'jobs'], result['processes']
        assert {p['release'] for p in result['processes']} == {layout['root'] + '/releases/v1'}
        assert all(p['status'] == 'online' and p['pid'] and p['cwd'] == os.path.realpath(layout['v1'])
                   for p in result['processes']), result['processes']
        assert result['running_releases'] == [layout['root'] + '/releases/v1']
        assert result['records'] == {layout['root'] + '/releases/v1': {'app': 'sample', 'version': 'v1'}}
        assert result['current'] == {'app': 'sample', 'version': 'v2'}
        # pm2 jlist carries each process's environment: none of it comes back.
        assert SECRET not in json.dumps(result) and 'pm2_env' not in json.dumps(result['processes'])

    # After the reload the processes run v2; a release without a record reads as {}.
    os.remove(os.path.join(layout['v2'], 'RELEASE.json'))
    reloaded = _pm2(layout['home'], 'reload', layout['ecosystem'], '--only', 'web,jobs')
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    result = run_module(MODULE, deploy_to=layout['root'], apps=['web', 'jobs'], pm2_home=layout['home'],
                        executable=PM2)
    assert result['running_releases'] == [layout['root'] + '/releases/v2'], result['processes']
    assert result['records'] == {layout['root'] + '/releases/v2': {}} and result['current'] == {}


def test_a_failing_pm2_or_a_broken_record_is_said_plainly(run_module, layout, tmp_path):
    started = _pm2(layout['home'], 'start', layout['ecosystem'], '--only', 'jobs')
    assert started.returncode == 0, started.stdout + started.stderr
    failing = tmp_path / 'pm2'
    failing.write_text('#!/bin/sh\necho "connect EACCES rpc.sock" >&2\nexit 3\n')
    failing.chmod(0o755)
    result = run_module(MODULE, deploy_to=layout['root'], apps=['jobs'], pm2_home=layout['home'],
                        executable=str(failing))
    assert result.get('failed') is not True and result['running_releases'] == [], result
    assert 'pm2 jlist failed' in result['pm2_error'] and 'connect EACCES rpc.sock' in result['pm2_error'], result

    with open(os.path.join(layout['v1'], 'RELEASE.json'), 'w') as handle:
        handle.write('{"version": "v1"')  # cut short
    broken = run_module(MODULE, deploy_to=layout['root'], apps=['jobs'], pm2_home=layout['home'], executable=PM2,
                        current_record=os.path.join(layout['root'], 'current', 'RELEASE.json'))
    assert_clear_failure(broken, 'the release record %s/RELEASE.json is not valid JSON' % layout['v1'],
                         'rebuild that release or remove the file')
