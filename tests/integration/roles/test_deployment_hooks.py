"""roles/deployment tasks_from: hooks, the project's own scripts at a phase boundary (runbooks 000 and 004: npm run
smoke:staging, validate:data-integrity): where they run, with what, on which hosts; their output for the report; a
failure or a timeout that fails the phase, saying why; a check run that runs none of them."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest
import yaml

from helpers import REPO, ProcessWatcher

ANSIBLE_PLAYBOOK = os.path.join(REPO, '.venv', 'bin', 'ansible-playbook')


@pytest.fixture
def fleet(tmp_path):
    """Two hosts (local connections), each with its own deploy root holding release v2 and current."""
    hosts = {}
    for host in ('app1', 'app2'):
        root = tmp_path / host
        (root / 'releases' / 'v2').mkdir(parents=True)
        os.symlink(str(root / 'releases' / 'v2'), str(root / 'current'))
        hosts[host] = {'ansible_connection': 'local', 'ansible_python_interpreter': os.path.join(REPO, '.venv', 'bin', 'python'),
                       'backend_deploy_to': str(root)}
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(yaml.safe_dump({'app_servers': {'hosts': hosts}}))
    return dict(tmp=tmp_path, inventory=str(inventory), out=tmp_path / 'out.log')


def run_hook(fleet, hook, check=False, **variables):
    """The hook included as the playbooks include it (run_once); (rc, output, deployment_hooks_run)."""
    variables.setdefault('runbook_version', 'v2')
    variables.setdefault('runbook_environment', 'staging')
    playbook = [{'name': 'hooks', 'hosts': 'app_servers', 'gather_facts': False, 'vars': variables, 'tasks': [
        {'name': 'Run the hook', 'ansible.builtin.include_role': {
            'name': 'runbook.deploy.deployment', 'tasks_from': 'hooks', 'apply': {'run_once': True}},
         'vars': {'deployment_hook': hook}, 'run_once': True},
        {'name': 'Show what ran', 'ansible.builtin.debug': {
            'msg': "HOOKS {{ hostvars['localhost'].deployment_hooks_run | default([]) | to_json }}"}, 'run_once': True},
    ]}]
    path = fleet['tmp'] / 'play.yml'
    path.write_text(yaml.safe_dump(playbook, sort_keys=False))
    proc = subprocess.run([ANSIBLE_PLAYBOOK, '-i', fleet['inventory'], str(path)] + (['--check'] if check else []),
                          capture_output=True, text=True, check=False, timeout=120)
    output = proc.stdout + proc.stderr
    ran = None
    for line in output.splitlines():
        if '"msg": "HOOKS ' in line:
            ran = json.loads(json.loads('{' + line.strip().rstrip(',') + '}')['msg'][len('HOOKS '):])
    return proc.returncode, output, ran


def test_commands_run_in_the_release_once_or_on_every_host_after_your_task_file(fleet):
    tasks_file = fleet['tmp'] / 'before_smoke.yml'
    tasks_file.write_text(yaml.safe_dump([{'name': 'A task of the project', 'ansible.builtin.copy': {
        'dest': str(fleet['tmp'] / 'task-file-ran'), 'content': '{{ deployment_hook }}\n', 'mode': '0644'}}]))
    out = fleet['out']
    rc, output, ran = run_hook(fleet, 'after_database', deployment_hook_tasks={'after_database': str(tasks_file)},
                               deployment_hooks={'after_database': [
                                   'echo "integrity $RUNBOOK_HOOK $RUNBOOK_VERSION $RUNBOOK_ENVIRONMENT $(pwd -P)" >> %s' % out,
                                   {'name': 'warm caches', 'command': 'echo "warm $GREETING $(pwd -P)" >> %s; echo done' % out,
                                    'hosts': 'all', 'environment': {'GREETING': 'hi'}}]})
    assert rc == 0, output[-5000:]
    assert (fleet['tmp'] / 'task-file-ran').read_text() == 'after_database\n'
    release = {host: str(fleet['tmp'] / host / 'releases' / 'v2') for host in ('app1', 'app2')}
    assert sorted(out.read_text().splitlines()) == sorted([
        'integrity after_database v2 staging %s' % release['app1'],
        'warm hi %s' % release['app1'], 'warm hi %s' % release['app2']])
    assert [(r['hook'], r['host'], r['rc'], r['timed_out']) for r in ran] == [
        ('after_database', 'app1', 0, False), ('after_database', 'app1', 0, False), ('after_database', 'app2', 0, False)]
    assert ran[1]['name'] == 'warm caches' and ran[1]['output'] == ['done'] and ran[1]['seconds'] < 30

    # After the switch they run in current.
    out.unlink()
    rc, output, ran = run_hook(fleet, 'after_release',
                               deployment_hooks={'after_release': ['echo "$RUNBOOK_RELEASE_DIR $(pwd -P)" >> %s' % out]})
    assert rc == 0, output[-5000:]
    assert out.read_text() == '%s/app1/current %s\n' % (fleet['tmp'], release['app1'])


def test_a_token_in_a_commands_environment_reaches_it_but_no_command_line_nor_the_output(fleet):
    """ansible.builtin.command with a task's environment: put it on the command line starting the module (ps showed
    the token while the hook ran); a second watcher sees the hook itself, so an empty first one means something."""
    secret = 'hook-token-%s' % uuid.uuid4().hex
    control = 'hook-running-%s' % uuid.uuid4().hex[:8]
    seen = fleet['tmp'] / 'seen'
    command = {'name': 'staging suite', 'environment': {'SMOKE_TEST_TOKEN': secret},
               'command': 'printf %%s "$SMOKE_TEST_TOKEN" > %s; echo "token $SMOKE_TEST_TOKEN"; echo %s >/dev/null; '
                          'sleep 1.5' % (seen, control)}
    with ProcessWatcher(secret) as leaks, ProcessWatcher(control) as running:
        rc, output, ran = run_hook(fleet, 'after_backends', deployment_hooks={'after_backends': [command]})
    assert rc == 0, output[-5000:]
    assert running.seen, 'the watcher never saw the hook run'
    assert leaks.seen == {}, 'a command line holds the token: %r' % leaks.seen
    assert seen.read_text() == secret
    assert ran[0]['output'] == ['token ********'], ran
    assert secret not in output


def test_a_failing_or_hanging_command_fails_the_phase_with_its_last_lines_and_is_killed(fleet):
    rc, output, ran = run_hook(fleet, 'after_release', deployment_hooks={'after_release': [
        {'name': 'smoke:staging', 'command': 'echo "GET /api/cases 500"; echo "1 of 12 failed" >&2; exit 3'}]})
    assert rc != 0, output[-5000:]
    assert ("after_release command 'smoke:staging' on app1 failed (exit 3) in %s/app1/current: GET /api/cases 500 | "
            "1 of 12 failed" % fleet['tmp']) in output, output[-5000:]

    marker = 'sleep 60.%d' % os.getpid()
    started = time.monotonic()
    rc, output, ran = run_hook(fleet, 'before_release', deployment_hooks={'before_release': [
        # A child that would outlive its shell: the whole process group goes.
        {'name': 'critical paths', 'command': "sh -c '%s' & wait" % marker, 'timeout': 2}]})
    assert rc != 0 and "before_release command 'critical paths' on app1 timed out after 2 s" in output, output[-5000:]
    assert time.monotonic() - started < 60
    assert subprocess.run(['pgrep', '-f', marker], capture_output=True, check=False).returncode == 1, 'the child survived'


def test_a_check_run_runs_no_command_and_a_misspelt_hook_point_is_refused(fleet):
    rc, output, ran = run_hook(fleet, 'after_release', check=True,
                               deployment_hooks={'after_release': ['echo ran >> %s' % fleet['out']]})
    assert rc == 0 and not fleet['out'].exists() and ran == [], output[-5000:]
    rc, output, ran = run_hook(fleet, 'after_relase')
    assert rc != 0 and 'value of deployment_hook must be one of: before_build, after_build' in output, output[-5000:]
