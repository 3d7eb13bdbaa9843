"""A release's own settings (deploy/runbook.yml, issue 16 item 7): the backend role's tasks_from=release_settings
reads them from the release on the host, refuses a file that sets anything else or sets it wrongly, and the smoke
role then runs the release's checks; a release without the file gets the inventory's checks again.

Before: smoke_checks, migrate_verify_* and runbook_flag_rollouts were inventory-wide, so redeploying an older version
checked it for what the newest one added (a restore rollback failed its verification on a column only the newer
version has)."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading

import pytest
import yaml

from helpers import REPO


@pytest.fixture
def app():
    """A loopback app that answers /release-check (what the new release added) and nothing else."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            self.send_response(200 if self.path == '/release-check' else 404)
            self.end_headers()
            self.wfile.write(b'ok')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield 'http://127.0.0.1:%d' % server.server_address[1]
    server.shutdown()


def play(tmp_path, tasks, **extra):
    playbook = tmp_path / 'play.yml'
    playbook.write_text(yaml.safe_dump([{'name': 'release settings', 'hosts': 'localhost', 'gather_facts': False,
                                         'tasks': tasks}], sort_keys=False))
    extra_vars = tmp_path / 'extra.yml'
    extra_vars.write_text(yaml.safe_dump(extra))
    return subprocess.run([os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                           '-e', 'ansible_python_interpreter=' + os.path.join(REPO, '.venv', 'bin', 'python'),
                           '-e', '@' + str(extra_vars), str(playbook)],
                          capture_output=True, text=True, check=False, timeout=180)


def release(root, version, settings=None):
    path = root / 'releases' / version
    path.mkdir(parents=True)
    if settings is not None:
        (path / 'deploy').mkdir()
        (path / 'deploy' / 'runbook.yml').write_text(settings if isinstance(settings, str) else yaml.safe_dump(settings))


def read_and_smoke(version):
    return [
        {'name': 'read ' + version, 'ansible.builtin.include_role': {
            'name': 'runbook.deploy.backend', 'tasks_from': 'release_settings'},
         'vars': {'backend_release_settings_version': version}},
        {'name': 'smoke ' + version, 'ansible.builtin.include_role': {
            'name': 'runbook.deploy.smoke', 'apply': {'ignore_errors': True}}},
        {'name': 'record ' + version, 'ansible.builtin.copy': {
            'dest': '{{ out }}/%s.json' % version, 'mode': '0600',
            'content': '{{ {"settings": backend_release_settings, "source": backend_release_settings_source,'
                       ' "ran": smoke_result.checks | map(attribute="name") | list,'
                       ' "passed": smoke_result.passed} | to_json }}'}},
    ]


def test_the_release_checks_what_it_has_and_a_release_without_the_file_gets_the_inventory_back(tmp_path, app):
    root = tmp_path / 'deploy'
    release(root, 'v1')
    release(root, 'v2', {'smoke_checks': [{'name': 'what v2 added', 'path': '/release-check'}],
                         'migrate_verify_columns': {'cases': ['id', 'view_count']},
                         'runbook_flag_rollouts': [{'name': 'new_view', 'steps': [50, 100]}]})
    out = tmp_path / 'out'
    out.mkdir()
    run = play(tmp_path, read_and_smoke('v2') + read_and_smoke('v1'), out=str(out), backend_deploy_to=str(root),
               backend_version='v2', smoke_base_url=app, smoke_wait_timeout=0,
               smoke_checks=[{'name': 'inventory check', 'path': '/inventory-check'}])
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    v2 = yaml.safe_load((out / 'v2.json').read_text())
    assert v2['source'] == str(root / 'releases' / 'v2' / 'deploy' / 'runbook.yml')
    assert v2['settings']['runbook_flag_rollouts'] == [{'name': 'new_view', 'steps': [50, 100]}]
    assert v2['ran'] == ['what v2 added'] and v2['passed'] is True, v2
    v1 = yaml.safe_load((out / 'v1.json').read_text())
    assert v1['settings'] == {} and v1['source'] == ''
    assert v1['ran'] == ['inventory check'] and v1['passed'] is False, v1


@pytest.mark.parametrize('text, expected', [
    (yaml.safe_dump({'backup_s3_bucket': 'elsewhere', 'smoke_checks': {'name': 'health'},
                     'runbook_flag_rollouts': [{'steps': [10]}]}),
     ['3 problem(s)', '(1) backup_s3_bucket cannot be set by a release (it may set backend_cron_jobs, migrate_verify_columns, ',
      "argument 'smoke_checks' is of type dict and we were unable to convert to list",
      'missing required arguments: name found in runbook_flag_rollouts']),
    ('smoke_checks: [unclosed\n', ['1 problem(s)', '(1) it is not valid YAML']),
    ('- smoke_checks\n', ['1 problem(s)', '(1) it must be a mapping of settings, not a list']),
])
def test_a_release_file_that_sets_anything_else_or_wrongly_is_refused_naming_every_problem(tmp_path, text, expected):
    root = tmp_path / 'deploy'
    release(root, 'v2', text)
    run = play(tmp_path, read_and_smoke('v2')[:1], backend_deploy_to=str(root), backend_version='v2')
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert str(root / 'releases' / 'v2' / 'deploy' / 'runbook.yml') + ': ' in output
    for fragment in expected:
        assert fragment in output, (fragment, output[-3000:])
    assert 'no app and no database was changed' in output
