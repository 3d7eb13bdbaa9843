"""runbook.deploy.await_job: heartbeat lines while a background task runs, in ansible-playbook's output and in
ansible-runner's event stream (what AWX shows), then the task's own result; and pg_backup's progress file, which
the backup role's heartbeats read.

Before: a backup or a build was one silent task, however long it ran."""

from __future__ import annotations

import json
import os
import re
import stat

import ansible_runner
import yaml

from helpers import REPO

PYTHON = os.path.join(REPO, '.venv', 'bin', 'python')
# A background task that writes a progress file as a long backup does (1 MiB more every 0.4 s, for ~12 s), then ends:
# long enough for a heartbeat every 3 s to read it at least once on a loaded machine, where a round (wait, status,
# read) takes seconds (a 5-second writer had ended before the only heartbeat of a run beside the whole suite).
WRITER = ('for i in $(seq 1 30); do printf \'{"phase": "dump", "bytes": %d}\' $((i * 1048576)) > "$P.tmp"; '
          'mv "$P.tmp" "$P"; sleep 0.4; done; rm -f "$P"; echo done writing')


def _run(tmp_path, tasks):
    private = tmp_path / 'runner'
    (private / 'project').mkdir(parents=True)
    (private / 'project' / 'play.yml').write_text(yaml.safe_dump([{
        'name': 'Await', 'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}]))
    (private / 'inventory').mkdir()
    (private / 'inventory' / 'hosts').write_text(
        'localhost ansible_connection=local ansible_python_interpreter=%s\n' % PYTHON)
    envvars = {k: v for k, v in os.environ.items() if k.startswith('ANSIBLE_')}
    return ansible_runner.run(private_data_dir=str(private), playbook='play.yml', quiet=True, envvars=envvars)


def test_heartbeats_while_a_background_task_runs_then_its_own_result(tmp_path):
    progress = str(tmp_path / 'progress.json')
    run = _run(tmp_path, [
        {'name': 'Start', 'ansible.builtin.shell': WRITER, 'environment': {'P': progress}, 'async': 60, 'poll': 0,
         'register': 'job'},
        {'name': 'Wait', 'runbook.deploy.await_job': {'jid': '{{ job.ansible_job_id }}', 'heartbeat': 3,
                                                      'label': 'backup', 'progress_path': progress},
         'register': 'waited'},
        {'name': 'Show', 'ansible.builtin.debug': {'msg': '{{ {"waited": waited, "jid": job.ansible_job_id} | to_json }}'}},
    ])
    assert run.rc == 0, run.stdout.read()[-4000:]
    events = list(run.events)
    shown = json.loads(next(e for e in events if e.get('event') == 'runner_on_ok'
                            and e['event_data'].get('task') == 'Show')['event_data']['res']['msg'])
    waited = shown['waited']
    # The background command's own result, as if it had run in the foreground.
    assert waited['rc'] == 0 and waited['stdout'] == 'done writing', waited
    # The task's own result, as a foreground run registers it (stdout_lines included); async_status's keys are gone.
    assert waited['stdout_lines'] == ['done writing'] and 'ansible_job_id' not in waited and 'finished' not in waited, waited
    lines = waited['heartbeats']
    # A line every 3 s or so (the host waits for the end between two), each saying what the progress file said then
    # (nothing once the writer has removed it, on a machine slow enough to be between its end and the job's).
    assert 1 <= len(lines) <= 6, lines
    shapes = [re.match(r'^backup \d+ s(?:; dump, ([\d.]+) MiB written)?$', line) for line in lines]
    assert all(shapes), lines
    written = [float(m.group(1)) for m in shapes if m.group(1)]
    assert written and written == sorted(written), lines
    # What ansible-runner records (AWX's job events): the heartbeat lines, as they were printed.
    printed = ''.join(e.get('stdout', '') for e in events)
    assert all(line in printed for line in lines), printed[-2000:]
    # The job's status file is gone.
    assert os.path.isdir(os.path.expanduser('~/.ansible_async'))
    assert not os.path.exists(os.path.expanduser('~/.ansible_async/%s' % shown['jid']))


def test_a_failed_background_task_fails_with_its_own_message(tmp_path):
    run = _run(tmp_path, [
        {'name': 'Start', 'ansible.builtin.command': 'ls /no/such/dir', 'async': 60, 'poll': 0, 'register': 'job'},
        {'name': 'Wait', 'runbook.deploy.await_job': {'jid': '{{ job.ansible_job_id }}', 'heartbeat': 0},
         'register': 'waited', 'ignore_errors': True},
        {'name': 'Show', 'ansible.builtin.debug': {'msg': '{{ waited | to_json }}'}},
    ])
    events = list(run.events)
    waited = json.loads(next(e for e in events if e.get('event') == 'runner_on_ok'
                             and e['event_data'].get('task') == 'Show')['event_data']['res']['msg'])
    assert waited['failed'] is True and waited['rc'] == 2 and 'No such file' in waited['stderr'], waited
    assert waited['heartbeats'] == []


def test_pg_backup_writes_its_progress_while_it_runs_and_removes_it(run_module, stack, make_db, tmp_path):
    """The progress file the backup role's heartbeats read: private, and gone when the module ends."""
    from ansible_collections.runbook.deploy.plugins.module_utils import progress

    seen = []
    reporter = progress.Reporter(str(tmp_path / 'unit.json'), lambda: 4096, interval=0.05)
    with reporter:
        reporter.phase = 'dump'
        for dummy in range(100):
            if os.path.exists(reporter.path):
                seen.append((json.loads(open(reporter.path).read()), stat.S_IMODE(os.stat(reporter.path).st_mode)))
                break
            reporter.stopping.wait(0.05)
    assert seen and seen[0][0]['bytes'] == 4096 and seen[0][1] == 0o600, seen
    assert not os.path.exists(reporter.path)

    db = make_db(rows=2000)
    path = tmp_path / 'backup-progress.json'
    result = run_module('runbook.deploy.pg_backup', login_host=stack['RUNBOOK_PG_HOST'], login_port=int(stack['RUNBOOK_PG_PORT']),
                        login_user=stack['RUNBOOK_PG_USER'], login_password=stack['RUNBOOK_PG_PASSWORD'], db=db,
                        dest=str(tmp_path / 'backups'), progress_file=str(path))
    assert result.get('changed') and not result.get('failed'), result
    assert not path.exists() and not list(tmp_path.glob('backup-progress.json*'))
