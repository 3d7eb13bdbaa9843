"""roles/backend, backend_cron_jobs (runbook 002, "Phase 6: Cron Jobs Setup"): the jobs change with the release,
go back with a rollback, pause during the database phase, and only this app's entries of the crontab are touched.

Each crontab entry is run as cron runs it (its command line through /bin/sh, with cron's environment: HOME,
LOGNAME, SHELL=/bin/sh, PATH=/usr/bin:/bin), read back from `crontab -l`, the real crontab(1) of this machine. The
tests' schedules are real ones; no cron daemon runs here, and the entries are removed at the end."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import pytest
import yaml

from helpers import REPO

ANSIBLE_PLAYBOOK = os.path.join(REPO, '.venv', 'bin', 'ansible-playbook')
FOREIGN = ['# a line of the operator', '17 3 * * * /usr/local/bin/nightly-report',
           '#Ansible: runbook.deploy /srv/other-app refresh', '0 * * * * /srv/other-app/shared/cron/run-job refresh']


def crontab():
    proc = subprocess.run(['crontab', '-l'], capture_output=True, text=True, check=False)
    return proc.stdout.splitlines() if proc.returncode == 0 else []


def write_crontab(lines):
    subprocess.run(['crontab', '-'], input=''.join(line + '\n' for line in lines), text=True, check=True)


JOBS_V1 = [
    {'name': 'refresh-views', 'schedule': '0 * * * *', 'command': 'echo "v1 refresh $(cat VERSION) $GREETING $(pwd -P)" >> "$OUT"'},
    {'name': 'scheduled-reports', 'schedule': '*/15 * * * *', 'command': 'echo "v1 reports $GREETING" >> "$OUT"',
     'hosts': 'all'},
]


@pytest.fixture(scope='class')
def site(tmp_path_factory):
    """Two hosts (local connections, each with its own deploy root), two versions of a tiny app, and the crontab
    as it was, put back at the end with the entries this test added removed."""
    tmp = tmp_path_factory.mktemp('cron-site')
    sources = tmp / 'sources'
    out = tmp / 'out.log'
    slow_flag = tmp / 'slow'
    for version in ('v1', 'v2'):
        (sources / version / 'deploy').mkdir(parents=True)
        (sources / version / 'VERSION').write_text(version + '\n')
    # v2 carries its own jobs (deploy/runbook.yml), which win over the inventory's (JOBS_V1): the same job with
    # another command and schedule, scheduled-reports dropped, two new ones.
    (sources / 'v2' / 'deploy' / 'runbook.yml').write_text(yaml.safe_dump({'backend_cron_jobs': [
        {'name': 'refresh-views', 'schedule': '30 * * * *', 'command': 'echo "v2 refresh $(cat VERSION) $GREETING" >> "$OUT"'},
        {'name': 'backlog-cleanup', 'schedule': '0 2 * * 1-5', 'command': 'echo "v2 cleanup $GREETING" >> "$OUT"',
         'hosts': 'all'},
        {'name': 'slow', 'schedule': '@daily',
         'command': 'if [ -e %s ]; then sleep 4; fi; echo "slow done" >> "$OUT"' % slow_flag},
    ]}))
    hosts = {}
    for host in ('app1', 'app2'):
        deploy_to = tmp / host
        (deploy_to / 'shared').mkdir(parents=True)
        # The app's environment, as backend_env writes it (and a quoted value, as a hand-written .env has).
        env_file = 'OUT=%s\nGREETING="hello from %s"\n# a comment\nBAD-KEY=x\n' % (out, host)
        (deploy_to / 'shared' / '.env').write_text(env_file)
        hosts[host] = {'ansible_connection': 'local', 'ansible_python_interpreter': os.path.join(REPO, '.venv', 'bin', 'python'),
                       'backend_deploy_to': str(deploy_to)}
    inventory = tmp / 'hosts.yml'
    inventory.write_text(yaml.safe_dump({'app_servers': {'hosts': hosts}}))
    # Entries a killed earlier run of this test left behind (their deploy root is gone) go first.
    stale = [line for line in crontab() if '/pytest-of-' in line and 'cron-site' in line]
    write_crontab([line for line in crontab() if line not in stale] + FOREIGN)
    yield dict(tmp=tmp, sources=sources, inventory=str(inventory), out=out, slow_flag=slow_flag,
               app1=str(tmp / 'app1'), app2=str(tmp / 'app2'))
    write_crontab([line for line in crontab() if line not in FOREIGN and str(tmp) not in line])


def play(site, tasks_from='main', check=False, limit=None, **role_vars):
    """The backend role's entry points (space-separated, one after the other) on the site's hosts; (rc, recap, output)."""
    role_vars.setdefault('backend_app_name', 'cron-sample')
    role_vars.setdefault('backend_pm2_apps', [])
    role_vars.setdefault('backend_build_commands', [])
    role_vars.setdefault('backend_build_heartbeat', 0)
    role_vars.setdefault('backend_cron_jobs', JOBS_V1)
    if 'backend_version' in role_vars:
        role_vars.setdefault('backend_source_dir', str(site['sources'] / role_vars['backend_version']))
    playbook = [{'name': 'backend', 'hosts': 'app_servers', 'gather_facts': False, 'tasks': [
        {'name': 'role ' + entry_point, 'ansible.builtin.include_role': {'name': 'runbook.deploy.backend',
                                                                         'tasks_from': entry_point}, 'vars': role_vars}
        for entry_point in tasks_from.split()]}]
    path = site['tmp'] / 'play.yml'
    path.write_text(yaml.safe_dump(playbook))
    # One fork: the two "hosts" share this machine's crontab, which ansible.builtin.cron rewrites whole.
    proc = subprocess.run([ANSIBLE_PLAYBOOK, '-f', '1', '-i', site['inventory'], str(path)] + (['--check'] if check else [])
                          + (['--limit', limit] if limit else []), capture_output=True, text=True, check=False, timeout=300)
    recap = {}
    for line in proc.stdout.splitlines():
        if line.startswith('app') and 'ok=' in line:
            host, counts = line.split(':', 1)
            recap[host.strip()] = {k: int(v) for k, v in (item.split('=') for item in counts.split())}
    return proc.returncode, recap, proc.stdout + proc.stderr


def our_entries(site):
    """{(deploy root, job name): (schedule fields, command)} of the site's entries, as crontab -l lists them."""
    lines = crontab()
    entries = {}
    for index, line in enumerate(lines):
        if line.startswith('#Ansible: runbook.deploy ' + str(site['tmp'])):
            root, name = line[len('#Ansible: runbook.deploy '):].rsplit(' ', 1)
            entry = lines[index + 1]
            count = 1 if entry.startswith('@') else 5
            fields = entry.split(None, count)
            entries[(os.path.basename(root), name)] = (' '.join(fields[:count]), fields[count])
    return entries


def run_as_cron(command):
    """One crontab entry's command, run the way cron runs it."""
    env = {'HOME': '/root', 'LOGNAME': 'root', 'SHELL': '/bin/sh', 'PATH': '/usr/bin:/bin'}
    return subprocess.run(['/bin/sh', '-c', command], env=env, cwd='/root', capture_output=True, text=True,
                          check=False, timeout=60)


def run_entries(site):
    """Run every entry of the site (in a stable order); return the lines they appended to the output file."""
    if site['out'].exists():
        site['out'].unlink()
    for key, (dummy, command) in sorted(our_entries(site).items()):
        proc = run_as_cron(command)
        assert proc.returncode == 0, (key, proc.stdout, proc.stderr)
    return sorted(site['out'].read_text().splitlines()) if site['out'].exists() else []


class TestCronJobsOfOneSite(object):
    """The tests continue from one another (one site, v1 then v2, a pause, a rollback): one unit for the scheduler
    of tests/conftest.py, which keeps a class's tests on one worker, in order."""

    def test_jobs_follow_the_release_on_every_host_and_leave_other_entries_alone(self, site):
        rc, recap, out = play(site, backend_version='v1')
        assert rc == 0, out[-5000:]
        assert our_entries(site) == {
            # hosts: one -> the play's first host only.
            ('app1', 'refresh-views'): ('0 * * * *', site['app1'] + '/shared/cron/run-job refresh-views'),
            ('app1', 'scheduled-reports'): ('*/15 * * * *', site['app1'] + '/shared/cron/run-job scheduled-reports'),
            ('app2', 'scheduled-reports'): ('*/15 * * * *', site['app2'] + '/shared/cron/run-job scheduled-reports'),
        }
        assert run_entries(site) == sorted([
            'v1 refresh v1 hello from app1 %s' % os.path.realpath(site['app1'] + '/releases/v1'),
            'v1 reports hello from app1', 'v1 reports hello from app2'])
        # Every run leaves its trace on the host (cron mails nobody here): start, end with the exit code, the last run.
        log = (site['tmp'] / 'app1' / 'shared' / 'cron' / 'log' / 'refresh-views.log').read_text().splitlines()
        assert [line.split(' ', 1)[1].split(' after ')[0] for line in log] == ['start: release v1', 'end: exit 0']
        last = (site['tmp'] / 'app1' / 'shared' / 'cron' / 'log' / 'refresh-views.last').read_text()
        assert ' end: exit 0 after ' in last
        # A job's own output goes into its log between the start and the end line, and its exit code is the run's (cron
        # reports a failed run): a job of the release that prints on both streams and fails.
        noisy = site['tmp'] / 'app1' / 'releases' / 'v1' / '.runbook-cron' / 'noisy.sh'
        noisy.write_text('echo "to stdout"\necho "to stderr" >&2\nexit 3\n')
        try:
            failed = run_as_cron(site['app1'] + '/shared/cron/run-job noisy')
        finally:
            noisy.unlink()
        assert failed.returncode == 3 and failed.stdout == '' and failed.stderr == '', failed
        noisy_log = site['tmp'] / 'app1' / 'shared' / 'cron' / 'log' / 'noisy.log'
        lines = noisy_log.read_text().splitlines()
        assert [lines[0].split(' ', 1)[1]] + lines[1:3] == ['start: release v1', 'to stdout', 'to stderr'], lines
        assert len(lines) == 4 and lines[3].split(' ', 1)[1].startswith('end: exit 3 after '), lines
        assert (site['tmp'] / 'app1' / 'shared' / 'cron' / 'log' / 'noisy.last').read_text() == lines[3] + '\n'
        assert stat.S_IMODE(noisy_log.stat().st_mode) == 0o600
        # The commands live in the release, not in the crontab (which names the job only).
        assert [job['name'] for job in json.loads((site['tmp'] / 'app1' / 'releases' / 'v1' / '.runbook-cron' / 'jobs.json')
                                                  .read_text())] == ['refresh-views', 'scheduled-reports']
        for line in FOREIGN:
            assert line in crontab()

        rc, recap, out = play(site, backend_version='v1', limit='app1')
        assert rc == 0 and recap['app1']['changed'] == 0, out[-5000:]

        # v2 brings its own jobs. A check run predicts the new entry and changes nothing.
        rc, recap, out = play(site, check=True, backend_version='v2', limit='app1')
        assert rc == 0, out[-5000:]
        assert 'changed: [app1] => (item=backlog-cleanup (0 2 * * 1-5))' in out, out[-5000:]
        assert ('app1', 'scheduled-reports') in our_entries(site)
        # On app1 only (app2 stays on v1): each host's crontab follows its own current.
        rc, recap, out = play(site, backend_version='v2', limit='app1')
        assert rc == 0, out[-5000:]
        assert our_entries(site) == {
            ('app1', 'refresh-views'): ('30 * * * *', site['app1'] + '/shared/cron/run-job refresh-views'),
            ('app1', 'backlog-cleanup'): ('0 2 * * 1-5', site['app1'] + '/shared/cron/run-job backlog-cleanup'),
            ('app1', 'slow'): ('@daily', site['app1'] + '/shared/cron/run-job slow'),
            ('app2', 'scheduled-reports'): ('*/15 * * * *', site['app2'] + '/shared/cron/run-job scheduled-reports'),
        }
        assert run_entries(site) == sorted(['v2 refresh v2 hello from app1', 'v2 cleanup hello from app1',
                                            'v1 reports hello from app2', 'slow done'])
        for line in FOREIGN:
            assert line in crontab()
        # An entry that fires in the instant between the switch and the crontab update runs the new release's job, or
        # nothing when that release no longer has it.
        site['out'].unlink()
        assert run_as_cron(site['app1'] + '/shared/cron/run-job scheduled-reports').returncode == 0
        assert not site['out'].exists()

    def test_the_pause_waits_for_a_running_job_skips_every_run_and_the_resume_keeps_an_operators_pause(self, site):
        marker = site['tmp'] / 'app1' / 'shared' / 'cron' / 'paused'
        if site['out'].exists():
            site['out'].unlink()
        # A job that is running when the pause starts: the pause waits for it to finish.
        site['slow_flag'].write_text('')
        slow = subprocess.Popen(['/bin/sh', '-c', site['app1'] + '/shared/cron/run-job slow'], env={'PATH': '/usr/bin:/bin'})
        time.sleep(1)
        started = time.monotonic()
        rc, recap, out = play(site, tasks_from='cron_pause', limit='app1', deployment_run_id='4242')
        waited = time.monotonic() - started
        site['slow_flag'].unlink()
        assert rc == 0, out[-5000:]
        assert slow.poll() == 0 and 'slow done' in site['out'].read_text(), 'the pause returned before the job ended'
        assert waited >= 2, waited
        assert marker.read_text().startswith('deployment 4242 at ')
        # Paused: every entry of the host runs and does nothing (app2's are not paused), and says why in its log.
        assert run_entries(site) == ['v1 reports hello from app2']
        log = (site['tmp'] / 'app1' / 'shared' / 'cron' / 'log' / 'refresh-views.log').read_text()
        assert ' skipped: paused (deployment 4242 at ' in log

        # A job that does not end within backend_cron_pause_timeout: the run fails, saying so; the jobs stay paused.
        stuck = subprocess.Popen(['flock', '-s', site['app1'] + '/shared/cron/jobs.lock', 'sleep', '20'])
        try:
            time.sleep(0.5)
            rc, recap, out = play(site, tasks_from='cron_pause', limit='app1', backend_cron_pause_timeout=1)
            assert rc != 0 and 'still runs after 1 s (backend_cron_pause_timeout)' in out, out[-5000:]
            assert 'the database was not touched' in out
        finally:
            stuck.kill()
            stuck.wait()
        assert marker.exists()

        rc, recap, out = play(site, tasks_from='cron_resume', limit='app1')
        assert rc == 0 and recap['app1']['changed'] == 1, out[-5000:]
        assert not marker.exists()
        assert 'v2 refresh v2 hello from app1' in run_entries(site)

        # An operator's own pause is theirs: neither a deployment's pause nor its resume touches it.
        marker.write_text('operator: reports off during the audit\n')
        rc, recap, out = play(site, tasks_from='cron_pause cron_resume', limit='app1')
        assert rc == 0 and recap['app1']['changed'] == 0, out[-5000:]
        assert marker.read_text() == 'operator: reports off during the audit\n'
        assert run_entries(site) == ['v1 reports hello from app2']
        marker.unlink()

    def test_a_rollback_brings_back_the_jobs_of_the_release_it_goes_back_to(self, site):
        rc, recap, out = play(site, tasks_from='rollback', limit='app1')
        assert rc == 0, out[-5000:]
        assert {key: value[0] for key, value in our_entries(site).items()} == {
            ('app1', 'refresh-views'): '0 * * * *', ('app1', 'scheduled-reports'): '*/15 * * * *',
            ('app2', 'scheduled-reports'): '*/15 * * * *'}
        assert run_entries(site) == sorted([
            'v1 refresh v1 hello from app1 %s' % os.path.realpath(site['app1'] + '/releases/v1'),
            'v1 reports hello from app1', 'v1 reports hello from app2'])
