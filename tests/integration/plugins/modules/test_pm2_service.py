"""runbook.deploy.pm2_service against a real PM2 daemon (a private PM2_HOME per test) and the sample apps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid

import pytest

from helpers import REPO, RequestLoop, assert_clear_failure, free_port

MODULE = 'runbook.deploy.pm2_service'
PM2 = os.path.join(REPO, 'node_modules', '.bin', 'pm2')
FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'pm2')

ECOSYSTEM = """module.exports = {
  apps: [
    {name: 'api', script: './server.js', exec_mode: 'cluster', instances: 2, wait_ready: true, listen_timeout: 5000,
     env: {PORT: %(api_port)d, APP_VERSION: 'v1', SECRET_TOKEN: 'never-return-me'},
     env_production: {APP_VERSION: 'v1-production'}},
    {name: 'solo', script: './server.js', env: {PORT: %(solo_port)d, APP_VERSION: 'solo'}},
    // No exec_mode: PM2 runs a Node script with instances in cluster mode.
    {name: 'multi', script: './server.js', instances: 2, env: {PORT: %(multi_port)d, APP_VERSION: 'multi'}},
    {name: 'worker', script: './worker.js'},
    {name: 'crasher', script: './crash.js', min_uptime: 1000, max_restarts: 50, restart_delay: 100},
    // Node itself refuses to start it: a relative --env-file is read from the daemon's directory in cluster mode.
    {name: 'no-env-file', script: './server.js', exec_mode: 'cluster', instances: 1, node_args: ['--env-file=.env.missing'],
     min_uptime: 1000, max_restarts: 5, restart_delay: 100},
  ],
};
"""


@pytest.fixture
def app_dir(tmp_path):
    """The sample apps and an ecosystem with free ports, and a private PM2 daemon killed afterwards."""
    directory = tmp_path / 'app'
    shutil.copytree(FIXTURES, directory)
    ports = dict(api_port=free_port(), solo_port=free_port(), multi_port=free_port())
    (directory / 'ecosystem.config.js').write_text(ECOSYSTEM % ports)
    # PM2's unix sockets need a short path.
    home = tempfile.mkdtemp(prefix='pm2-', dir='/tmp')
    open(os.path.join(home, 'touch'), 'w').close()  # no first-run version check
    yield dict(path=str(directory), ecosystem=str(directory / 'ecosystem.config.js'), home=home, **ports)
    subprocess.run([PM2, 'kill'], env=dict(os.environ, PM2_HOME=home), capture_output=True, check=False)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def pm2(run_module, app_dir):
    def call(check=False, diff=False, **args):
        merged = dict(pm2_home=app_dir['home'], executable=PM2, ecosystem=app_dir['ecosystem'], stable_for=1,
                      timeout=30)
        merged.update(args)
        merged = {k: v for k, v in merged.items() if v is not None}
        return run_module(MODULE, check=check, diff=diff, **merged)
    return call


def jlist(home):
    out = subprocess.run([PM2, 'jlist'], env=dict(os.environ, PM2_HOME=home), capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def get_json(port, timeout=5):
    with urllib.request.urlopen('http://127.0.0.1:%d/' % port, timeout=timeout) as response:
        return json.loads(response.read())


def test_start_is_idempotent_and_waits_until_ready(pm2, app_dir):
    check = pm2(check=True, diff=True, name=['api', 'worker'], env='production')
    assert check['changed'] is True and check['actions'] == {'api': 'start', 'worker': 'start'}, check
    assert check['diff']['before'] == {'api': 'absent', 'worker': 'absent'}
    assert not os.path.exists(os.path.join(app_dir['home'], 'pm2.pid')), 'check mode started a PM2 daemon'

    result = pm2(name=['api', 'worker'], env='production', ready_url='http://127.0.0.1:%d/' % app_dir['api_port'])
    assert result['changed'] is True, result
    procs = result['processes']
    assert [(p['name'], p['status'], p['exec_mode']) for p in procs] == [
        ('api', 'online', 'cluster'), ('api', 'online', 'cluster'), ('worker', 'online', 'fork')]
    assert all(p['pid'] > 0 and p['uptime'] >= 1 for p in procs)
    assert get_json(app_dir['api_port'])['version'] == 'v1-production'
    assert 'never-return-me' not in json.dumps(result), 'the process environment leaked into the result'
    assert any('--only api --env production' in c for c in result['executed_commands'])
    assert any("'worker' has no env_production" in w for w in result['warnings'])

    again = pm2(name=['api', 'worker'], env='production')
    assert again['changed'] is False and again['actions'] == {'api': 'none', 'worker': 'none'}
    assert [p['pid'] for p in again['processes']] == [p['pid'] for p in procs]


def test_stop_start_restart_delete(pm2, app_dir):
    pm2(name=['solo', 'worker'])
    stopped = pm2(name=['solo', 'worker'], state='stopped')
    assert stopped['changed'] is True
    assert {p['status'] for p in stopped['processes']} == {'stopped'}
    assert pm2(name=['solo', 'worker'], state='stopped')['changed'] is False
    # One command per app: PM2 ignores `stop --only a,b`.
    assert [c.split()[1:3] for c in stopped['executed_commands'] if ' stop ' in c] == [['stop', 'solo'], ['stop', 'worker']]

    started = pm2(name=['solo'])
    assert started['changed'] is True and started['processes'][0]['status'] == 'online'
    pid = started['processes'][0]['pid']
    restarted = pm2(name=['solo'], state='restarted')
    assert restarted['changed'] is True and restarted['processes'][0]['pid'] != pid
    assert restarted['processes'][0]['restarts'] >= 1

    deleted = pm2(name=['solo', 'worker'], state='absent')
    assert deleted['changed'] is True and deleted['processes'] == []
    assert not [p for p in jlist(app_dir['home']) if p['name'] in ('solo', 'worker')]
    assert pm2(name=['solo', 'worker'], state='absent')['changed'] is False


def test_cluster_reload_keeps_serving(pm2, app_dir):
    pm2(name=['api'])
    old_pids = {p['pid'] for p in jlist(app_dir['home']) if p['name'] == 'api'}
    failures = []
    import threading
    stop = threading.Event()

    def load():
        while not stop.is_set():
            try:
                # An app that leaves the cluster with a connection in flight never answers it (see the fixture's
                # SIGINT handler); a slow answer on a loaded machine is not a lost one, hence 15 s.
                get_json(app_dir['api_port'], timeout=15)
            except Exception as exc:  # pylint: disable=broad-except
                failures.append(repr(exc))
            time.sleep(0.01)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        result = pm2(name=['api'], state='reloaded')
    finally:
        stop.set()
        thread.join()
    assert result['changed'] is True
    assert {p['pid'] for p in result['processes']}.isdisjoint(old_pids)
    assert failures == [], 'requests failed during a cluster reload: %s' % failures[:3]
    assert not result.get('warnings')


def test_fork_reload_warns_that_it_is_a_restart(pm2):
    pm2(name=['solo'])
    result = pm2(name=['solo'], state='reloaded')
    assert result['changed'] is True
    assert any('fork mode' in w for w in result.get('warnings', []))


def test_crash_loop_fails_with_the_error_log(pm2, app_dir):
    result = pm2(name=['crasher'], timeout=20)
    assert_clear_failure(result, "app 'crasher'", 'DATABASE_URL is not set')
    assert 'crash-looping' in result['msg'] or 'did not stay online' in result['msg']


def test_an_app_node_refuses_to_start_is_explained_from_pm2s_own_log(pm2, app_dir):
    """Node's own refusal goes to PM2's daemon log, not the app's error log (which stays empty)."""
    result = pm2(name=['no-env-file'], timeout=20)
    assert_clear_failure(result, "app 'no-env-file'", "Last lines of its error log:\n(empty); what processes wrote "
                         "before PM2 took their output", '.env.missing: not found')


def test_env_switch_on_reload(pm2, app_dir):
    pm2(name=['api'])
    assert get_json(app_dir['api_port'])['version'] == 'v1'
    switched = pm2(name=['api'], state='reloaded', env='production', update_env=True)
    assert switched['changed'] is True
    assert any('--env production --update-env' in c for c in switched['executed_commands'])
    assert get_json(app_dir['api_port'])['version'] == 'v1-production'


def test_save_writes_the_dump(pm2, app_dir):
    pm2(name=['worker'], save=True)
    with open(os.path.join(app_dir['home'], 'dump.pm2')) as handle:
        assert [p['name'] for p in json.load(handle)] == ['worker']


BAD_INPUTS = [
    (dict(name=['nope']), ["app 'nope' is not in ecosystem", 'api']),
    (dict(name=['api'], env='staging'), ['defines no env_staging in any app', 'production']),
    (dict(name=['api'], ecosystem='/nonexistent/ecosystem.config.js'), ['does not exist']),
    (dict(name=['api'], executable='/nonexistent/pm2'), ['pm2 was not found', 'executable']),
    (dict(name=['ghost'], ecosystem=None), ["app 'ghost' is not known to PM2", 'ecosystem']),
    (dict(name=['api'], env='production', ecosystem=None), ['env needs ecosystem']),
    (dict(name=['api'], timeout=0), ['timeout 1 or more']),
    (dict(name=['api'], cwd='/nonexistent/dir'), ["cwd '/nonexistent/dir' is not a directory"]),
]


@pytest.mark.parametrize('args,fragments', BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))])
def test_bad_input_is_a_clear_error(pm2, args, fragments):
    assert_clear_failure(pm2(**args), *fragments)


def test_broken_ecosystem_is_a_clear_error(pm2, app_dir):
    with open(app_dir['ecosystem'], 'w') as handle:
        handle.write('module.exports = { apps: [ { name: "api", script: ')
    assert_clear_failure(pm2(name=['api']), 'could not load ecosystem', 'SyntaxError')


def test_ready_url_that_never_answers(pm2, app_dir):
    result = pm2(name=['worker'], ready_url='http://127.0.0.1:%d/' % free_port(), timeout=3)
    # The app's own explanation, from its error log, comes with the timeout.
    assert_clear_failure(result, 'ready_url', 'did not answer 2xx', "Last lines of worker's error log:",
                         'worker: no queue configured (SYNC_QUEUE_URL is empty), idling')


def test_ready_url_credentials_never_shown(pm2, app_dir):
    secret = 'pw-%s' % uuid.uuid4().hex[:12]
    url = 'http://deployer:%s@127.0.0.1:%d/health' % (secret, free_port())
    result = pm2(name=['worker'], ready_url=url, timeout=3)
    assert_clear_failure(result, 'ready_url http://********@127.0.0.1:', 'did not answer 2xx')
    # Nowhere: not in the message, the warnings, the echoed arguments (invocation) or any other field.
    text = json.dumps(result)
    assert secret not in text and 'deployer:' not in text, text


def test_check_mode_runs_nothing_of_the_ecosystem(pm2, app_dir, tmp_path):
    marker = tmp_path / 'ecosystem-was-executed'
    with open(app_dir['ecosystem']) as handle:
        text = handle.read()
    with open(app_dir['ecosystem'], 'w') as handle:
        handle.write("require('fs').writeFileSync(%s, 'ran');\n%s" % (json.dumps(str(marker)), text))
    # Neither without a daemon, nor with one that already runs an app of the ecosystem.
    check = pm2(check=True, name=['solo', 'worker'], env='production')
    assert not marker.exists(), 'check mode executed the ecosystem file'
    assert check['changed'] is True and check['actions'] == {'solo': 'start', 'worker': 'start'}, check
    assert any('not checked' in n and 'ecosystem' in n for n in check['unpredicted']), check
    assert check['executed_commands'] == []

    subprocess.run([PM2, 'start', os.path.join(FIXTURES, 'worker.js'), '--name', 'worker'],
                   env=dict(os.environ, PM2_HOME=app_dir['home']), capture_output=True, check=True)
    check = pm2(check=True, name=['solo', 'worker'], env='production', state='reloaded')
    assert not marker.exists(), 'check mode executed the ecosystem file'
    assert check['actions'] == {'solo': 'start', 'worker': 'reload'}, check
    assert [c.split()[1] for c in check['executed_commands']] == ['jlist']


def test_check_mode_reads_a_json_ecosystem(pm2, app_dir):
    config = {'apps': [{'name': 'worker', 'script': './worker.js', 'env_production': {'APP_STAGE': 'p'}}]}
    path = os.path.join(app_dir['path'], 'ecosystem.json')
    with open(path, 'w') as handle:
        json.dump(config, handle)
    check = pm2(check=True, ecosystem=path, name=['worker'], env='production')
    assert check['changed'] is True and check['actions'] == {'worker': 'start'} and check['unpredicted'] == []
    assert_clear_failure(pm2(check=True, ecosystem=path, name=['nope']), "app 'nope' is not in ecosystem")


def test_crash_loop_after_a_start_reports_changed(pm2, app_dir):
    name = 'quitter-%s' % uuid.uuid4().hex[:8]
    with open(app_dir['ecosystem'], 'a') as handle:
        handle.write("module.exports.apps.push({name: '%s', script: './exit.js', min_uptime: 1000, max_restarts: 50,"
                     " restart_delay: 100});\n" % name)
    result = pm2(name=[name], timeout=20)
    assert_clear_failure(result, "app '%s'" % name, 'exiting at start')
    # The module did start it (PM2 keeps the app, errored): the task changed the host although it failed.
    assert result['changed'] is True, result
    assert result['actions'] == {name: 'start'}
    assert [p['name'] for p in jlist(app_dir['home'])] == [name]


def hand_start(app_dir, tmp_path, *argv, **env):
    """What an operator did before runbook.deploy: `pm2 start` by hand, in a checkout of the app (not the release)."""
    hand = tmp_path / 'hand-checkout'
    if not hand.exists():
        shutil.copytree(FIXTURES, hand)
    subprocess.run([PM2, 'start'] + list(argv), cwd=str(hand), capture_output=True, check=True,
                   env=dict(os.environ, PM2_HOME=app_dir['home'], **env))
    return str(hand)


def test_rehome_moves_hand_started_apps_onto_the_ecosystem_without_dropping_a_request(pm2, app_dir, tmp_path):
    # 'multi' gives instances but no exec_mode: PM2 runs it in cluster mode, so it moves without a gap too.
    hand = hand_start(app_dir, tmp_path, 'server.js', '--name', 'multi', '-i', '2',
                      PORT=str(app_dir['multi_port']), APP_VERSION='by-hand')
    hand_start(app_dir, tmp_path, 'worker.js', '--name', 'worker')
    assert get_json(app_dir['multi_port'])['version'] == 'by-hand'
    # Without rehome, a reload keeps the hand checkout's paths (PM2 keeps cwd and script across reloads).
    check = pm2(check=True, name=['multi', 'worker'], rehome=True)
    assert check['changed'] is True and check['actions'] == {'multi': 'rehome', 'worker': 'rehome'}, check
    assert check['rehomed'] == {'multi': os.path.join(hand, 'server.js'), 'worker': os.path.join(hand, 'worker.js')}
    assert {p['pm2_env']['pm_exec_path'] for p in jlist(app_dir['home'])} == {
        os.path.join(hand, 'server.js'), os.path.join(hand, 'worker.js')}, 'check mode moved something'

    with RequestLoop(lambda: get_json(app_dir['multi_port'], timeout=15), 0.01) as load:
        result = pm2(name=['multi', 'worker'], rehome=True, ready_url='http://127.0.0.1:%d/' % app_dir['multi_port'])
    assert result['changed'] is True and result['actions'] == {'multi': 'rehome', 'worker': 'rehome'}, result
    assert load.failures == [] and load.answers > 10, (load.answers, load.failures[:3])
    procs = jlist(app_dir['home'])
    assert sorted((p['name'], p['pm2_env']['pm_exec_path']) for p in procs) == [
        ('multi', os.path.join(app_dir['path'], 'server.js')), ('multi', os.path.join(app_dir['path'], 'server.js')),
        ('worker', os.path.join(app_dir['path'], 'worker.js'))], 'no temporary app is left behind'
    assert get_json(app_dir['multi_port'])['version'] == 'multi', 'the ecosystem env serves'
    # Cluster mode went through the temporary app, the old processes stopped while it alone answered; fork mode
    # was deleted and started, and says so.
    commands = [c.split(' ', 1)[1] for c in result['executed_commands'] if c.startswith(PM2) and ' jlist' not in c]
    assert commands[0].startswith('start ') and '--only multi-rehoming' in commands[0], commands
    # Each of the two starts is reloaded once: PM2 says online when a worker's process starts, and waits for it to
    # listen only in a reload, so the processes beside them go only once they listen.
    assert commands[1:] == ['reload multi-rehoming', 'stop multi', 'delete multi',
                            'start %s --only multi' % app_dir['ecosystem'], 'reload multi', 'delete multi-rehoming',
                            'delete worker', 'start %s --only worker' % app_dir['ecosystem']], commands
    assert [w for w in result['warnings'] if 'moved in fork mode' in w and "'worker'" in w], result['warnings']

    again = pm2(name=['multi', 'worker'], rehome=True)
    assert again['changed'] is False and again['actions'] == {'multi': 'none', 'worker': 'none'} and again['rehomed'] == {}


def test_rehome_puts_the_old_processes_back_when_the_new_release_is_not_ready(pm2, app_dir, tmp_path):
    hand = hand_start(app_dir, tmp_path, 'server.js', '--name', 'api', '-i', '2',
                      PORT=str(app_dir['api_port']), APP_VERSION='by-hand')
    result = pm2(name=['api'], rehome=True, ready_url='http://127.0.0.1:%d/' % free_port(), timeout=3)
    assert_clear_failure(result, 'did not answer 2xx', 'Nothing was moved: the old processes of api were started again')
    procs = jlist(app_dir['home'])
    assert sorted((p['name'], p['pm2_env']['status'], p['pm2_env']['pm_exec_path']) for p in procs) == [
        ('api', 'online', os.path.join(hand, 'server.js'))] * 2
    assert get_json(app_dir['api_port'])['version'] == 'by-hand'


def test_rehome_finishes_a_move_an_interrupted_run_left_half_done(pm2, app_dir, tmp_path):
    """Killed after the old processes were deleted: only the temporary app serves. Running the task again ends it."""
    pm2(name=['api'])
    wrapper = tmp_path / 'wrapper.config.js'
    wrapper.write_text("const c = require(%s); module.exports = {apps: [Object.assign({}, c.apps[0], "
                       "{name: 'api-rehoming'})]};" % json.dumps(app_dir['ecosystem']))
    subprocess.run([PM2, 'start', str(wrapper)], cwd=app_dir['path'], capture_output=True, check=True,
                   env=dict(os.environ, PM2_HOME=app_dir['home']))
    subprocess.run([PM2, 'delete', 'api'], capture_output=True, check=True, env=dict(os.environ, PM2_HOME=app_dir['home']))
    with RequestLoop(lambda: get_json(app_dir['api_port'], timeout=15), 0.01) as load:
        result = pm2(name=['api'], rehome=True)
    assert result['changed'] is True and result['actions'] == {'api': 'rehome'}, result
    assert load.failures == [], load.failures[:3]
    assert sorted(p['name'] for p in jlist(app_dir['home'])) == ['api', 'api']


def test_rehome_in_fork_mode_starts_the_old_processes_again_when_the_new_ones_fail(pm2, app_dir, tmp_path):
    secret = 'hand-%s' % uuid.uuid4().hex[:10]
    hand = hand_start(app_dir, tmp_path, 'server.js', '--name', 'solo', '--max-memory-restart', '300M', '--',
                      'an-argument', PORT=str(app_dir['solo_port']), APP_VERSION='by-hand', HAND_SECRET=secret)
    broken = os.path.join(app_dir['path'], 'broken.config.js')
    with open(broken, 'w') as handle:
        handle.write("module.exports = {apps: [{name: 'solo', script: './crash.js', min_uptime: 1000, "
                     "max_restarts: 3, restart_delay: 100}]};\n")
    result = pm2(name=['solo'], ecosystem=broken, rehome=True, timeout=15)
    assert_clear_failure(result, "app 'solo'", 'The old processes were started again as they ran',
                         '%s in %s' % (os.path.join(hand, 'server.js'), hand))
    assert result['changed'] is True
    # Serving again as the operator had started it: its script, its directory, its environment (stable by the time
    # the task ends; listening a moment later).
    answer = None
    for dummy in range(50):
        try:
            answer = get_json(app_dir['solo_port'])
            break
        except OSError:
            time.sleep(0.1)
    assert answer and answer['version'] == 'by-hand', answer
    restored = jlist(app_dir['home'])
    assert [(p['pm2_env']['pm_exec_path'], p['pm2_env']['pm_cwd'], p['pm2_env']['args'], p['pm2_env']['max_memory_restart'])
            for p in restored] == [(os.path.join(hand, 'server.js'), hand, ['an-argument'], 300 * 1024 * 1024)], restored
    assert secret not in json.dumps(result), 'the old environment went through the command line or the result'
