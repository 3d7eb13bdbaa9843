"""The deployment role's end of a run (tasks_from finish) after a failure past the switch that was not rolled back
(runbook_auto_rollback: false, or a rollback that failed): the history records what each host's apps run.

Before: such a run recorded running_version "" ("cannot be told"), and the operator had to look at every host."""

from __future__ import annotations

import json
import os
import subprocess

import yaml

from helpers import REPO

PYTHON = os.path.join(REPO, '.venv', 'bin', 'python')
PLAYBOOK = [{'name': 'Finish', 'hosts': 'app_servers', 'gather_facts': False, 'tasks': [
    {'name': 'Note the failure, as the backends play does', 'ansible.builtin.set_fact': {
        'deployment_run_failure': {'phase': 'backends', 'host': 'app2', 'message': 'app2: smoke test failed'}},
     'delegate_to': 'localhost', 'delegate_facts': True, 'run_once': True},
    {'name': 'Finish the run', 'ansible.builtin.include_role': {
        'name': 'runbook.deploy.deployment', 'tasks_from': 'finish'}},
]}]


def _finish(tmp_path, releases):
    """Run finish on hosts whose apps run the given releases (as tasks_from running reads them)."""
    hosts = {}
    for host, versions in releases.items():
        hosts[host] = {'ansible_connection': 'local', 'ansible_python_interpreter': PYTHON,
                       'backend_running_releases': ['/srv/app/%s/releases/%s' % (host, v) for v in versions],
                       'deployment_previous_version': 'v1.0.0'}
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(yaml.safe_dump({'app_servers': {'hosts': hosts, 'vars': {
        'deployment_environment': 'finish-test', 'deployment_version': 'v2.0.0', 'deployment_run_id': 'r1',
        'deployment_history_dir': str(tmp_path / 'history'), 'deployment_notify': False}}}))
    playbook = tmp_path / 'finish.yml'
    playbook.write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))
    run = subprocess.run([os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), '-i', str(inventory), str(playbook)],
                         capture_output=True, text=True, check=False, timeout=180)
    with open(tmp_path / 'history' / 'finish-test.jsonl') as handle:
        return run, json.loads(handle.read().splitlines()[-1])


def test_hosts_left_on_different_releases_are_each_recorded(tmp_path):
    run, entry = _finish(tmp_path, {'app1': ['v2.0.0'], 'app2': ['v2.0.0'], 'app3': ['v1.0.0']})
    assert run.returncode != 0 and 'failed in the backends phase' in run.stdout, run.stdout[-3000:]
    assert entry['status'] == 'failed', entry
    # By version, each with its hosts.
    assert entry['running_version'] == 'v1.0.0 on app3; v2.0.0 on app1, app2', entry
    assert entry['running_versions'] == {'app1': 'v2.0.0', 'app2': 'v2.0.0', 'app3': 'v1.0.0'}, entry


def test_hosts_on_one_release_record_it(tmp_path):
    run, entry = _finish(tmp_path, {'app1': ['v2.0.0'], 'app2': ['v2.0.0']})
    assert run.returncode != 0, run.stdout[-3000:]
    assert entry['running_version'] == 'v2.0.0' and entry['running_versions'] == {'app1': 'v2.0.0', 'app2': 'v2.0.0'}
