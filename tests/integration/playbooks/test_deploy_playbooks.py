"""End to end: playbooks/deploy_staging.yml, deploy_production.yml and rollback.yml on the local inventories.

The sample application (sample_app/) is deployed onto the local stack for real: PostgreSQL, PM2, Prisma, moto
(S3, CloudFront, STS). Each test gets its own environment name (database, buckets, PM2 homes, deploy root,
history) under a private directory, through extra vars, as a job template would pass them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import boto3
import pytest

from deploy_report_checks import (BEARER, CALLBACK, EXTRA_PASSWORD, HOOK_TOKEN, check_timeline, read, report_of,
                                  secret_extra_vars)
from helpers import REPO, free_port, sql

sys.path.insert(0, os.path.join(REPO, 'tests', 'servers'))
from webhook_recorder import WebhookRecorder  # noqa: E402 (the servers folder is not a package)

pytestmark = pytest.mark.slow

PLAYBOOK = os.path.join(REPO, '.venv', 'bin', 'ansible-playbook')
PM2 = os.path.join(REPO, 'node_modules', '.bin', 'pm2')
SECRET_TOKEN = 'xoxb-e2e-secret-token-do-not-print'
# inventories/local-production's apps listen on RUNBOOK_DEMO_PORT_BASE + 11 to 13; molecule's fixed ports are 27xxx
# and 29xxx.
PRODUCTION_PORT_BASE = 28100


class Env(object):
    """One local environment: its extra vars, its files, and ways to look at it."""

    def __init__(self, stack, inventory, name, root, webhook, port=None):
        self.stack = stack
        self.inventory = os.path.join(REPO, 'inventories', inventory)
        self.name = name
        self.root = root
        self.webhook = webhook
        self.port = port
        # The deploy_report callback, enabled in the runs whose report a test checks.
        self.callbacks = None
        self.db = 'sample_app_' + name.replace('-', '_')
        self.extra = {'runbook_environment': name, 'runbook_stack_dir': root,
                      # Short windows: the tests check behaviour, bench/ measures time.
                      'watch_duration': 2, 'flags_rollout_pause': 0,
                      # Backups and builds of seconds, as one task each (tests/integration/plugins/action/
                      # test_await_job.py and the check-mode class's deployment cover the heartbeats).
                      'backup_heartbeat': 0, 'backend_build_heartbeat': 0}
        if port:
            self.extra['sample_app_port'] = port
        # More environment variables for the playbook runs (the inventories read some, as RUNBOOK_DEMO_PORT_BASE).
        self.environment = {}

    def env(self):
        env = dict(os.environ, RUNBOOK_REPO=REPO, RUNBOOK_WEBHOOK_URL=self.webhook.url + '/services/T0/B0/' + SECRET_TOKEN,
                   ANSIBLE_FORCE_COLOR='0', ANSIBLE_NOCOLOR='1')
        env.update({k: v for k, v in self.stack.items() if k.startswith(('RUNBOOK_', 'AWS_'))})
        env.pop('PM2_HOME', None)
        env.update(self.environment)
        if self.callbacks:
            env['ANSIBLE_CALLBACKS_ENABLED'] = self.callbacks
        return env

    def command(self, playbook, *options, **extra):
        variables = dict(self.extra, **extra)
        return [PLAYBOOK, '-i', self.inventory, os.path.join(REPO, 'playbooks', playbook), '-e', json.dumps(variables)] + list(
            options)

    def play(self, playbook, *options, **extra):
        proc = subprocess.run(self.command(playbook, *options, **extra), env=self.env(), capture_output=True, text=True,
                              check=False, timeout=600)
        result = Result(proc.returncode, proc.stdout + proc.stderr)
        # Shown by pytest only when the test fails (captured output): the end of every run, whole.
        print('==== %s %s: rc=%s\n%s' % (playbook, json.dumps(extra), result.rc, result.output[-8000:]))
        return result

    def play_while_locked(self, playbook, during, **extra):
        """Run a playbook; once it holds the deploy lock, call during() (another run, say). Returns the playbook's
        Result and what during() returned."""
        proc = subprocess.Popen(self.command(playbook, **extra), env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        owner = os.path.join(self.root, 'deploy', self.name, 'deploy.lock', 'owner.json')
        deadline = time.monotonic() + 300
        while not os.path.exists(owner) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        try:
            assert os.path.exists(owner), 'the run never took the lock'
            beside = during()
        finally:
            output = proc.communicate(timeout=600)[0]
        result = Result(proc.returncode, output)
        print('==== %s %s (while locked): rc=%s\n%s' % (playbook, json.dumps(extra), result.rc, result.output[-8000:]))
        return result, beside

    def history(self):
        path = os.path.join(self.root, 'history', self.name + '.jsonl')
        if not os.path.exists(path):
            return []
        with open(path) as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def deploy_to(self, host='app1'):
        return os.path.join(self.root, 'deploy', self.name, host)

    def current(self, host='app1'):
        return os.path.basename(os.readlink(os.path.join(self.deploy_to(host), 'current')))

    def health(self, port=None):
        with urllib.request.urlopen('http://127.0.0.1:%d/health' % (port or self.port), timeout=5) as response:
            return json.loads(response.read())

    def snapshot(self):
        """Row count and an md5 over every row of every table that existed before (the data, not the schema)."""
        listing = ("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                   "AND tablename <> '_prisma_migrations' ORDER BY 1")
        tables = [r[0] for r in sql(self.stack, self.db, listing)]
        result = {}
        for table in tables:
            query = ("SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM %s t" % table)
            count, digest = sql(self.stack, self.db, query)[0]
            result[table] = (count, digest)
        return result


class Result(object):
    def __init__(self, rc, output):
        self.rc = rc
        self.output = output

    def recap(self):
        counts = {}
        for line in self.output.splitlines():
            match = re.match(r'^(\S+)\s+:\s+(ok=.*)$', line)
            if match:
                counts[match.group(1)] = {k: int(v) for k, v in (item.split('=') for item in match.group(2).split())}
        return counts

    def __repr__(self):
        return 'rc=%s\n%s' % (self.rc, self.output[-6000:])


def _warnings(env):
    """The warning messages the webhook heard for this environment."""
    return [m for m in messages(env.webhook) if m.get('text', '').startswith('Deployment warning: ')
            and m['text'].endswith(' on %s' % env.name)]


def messages(recorder):
    if not os.path.exists(recorder.path):
        return []
    with open(recorder.path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


@contextlib.contextmanager
def _environments(stack, webhook):
    """Create environments (prepared like a real one: database, buckets, distribution); clean them up after."""
    made = []

    def factory(inventory='local', port=True, name=None):
        name = name or 'local-e2e-' + uuid.uuid4().hex[:6]
        # A short root: PM2's socket paths must stay under the 108 bytes a unix socket path may have.
        root = tempfile.mkdtemp(prefix='e2e-', dir='/tmp')
        env = Env(stack, inventory, name, root, webhook, port=free_port() if port else None)
        made.append(env)
        result = env.play('local_sample_app.yml')
        assert result.rc == 0, result
        return env

    try:
        yield factory
    finally:
        for env in made:
            for pm2_home in _pm2_homes(env.root):
                subprocess.run([PM2, 'kill'], env=dict(os.environ, PM2_HOME=pm2_home), capture_output=True, check=False)
            sql(stack, 'postgres', 'DROP DATABASE IF EXISTS %s WITH (FORCE)' % env.db)
            _drop_bucket(stack, 'sample-app-frontend-' + env.name)
            _remove_cron_entries(env.root)
            shutil.rmtree(env.root, ignore_errors=True)


@pytest.fixture(scope='class')
def more_envs(stack, tmp_path_factory):
    """The environments of a class: shared_env first, then any other one a test of the class asks for."""
    recorder = WebhookRecorder(str(tmp_path_factory.mktemp('webhook') / 'webhook.jsonl'))
    recorder.start()
    try:
        with _environments(stack, recorder) as factory:
            yield factory
    finally:
        recorder.stop()


@pytest.fixture(scope='class')
def shared_env(more_envs):
    """One environment that the tests of a class use in turn, each starting where the one before it ended: a scenario
    whose first deployment is another test's subject costs one deployment less. tests/conftest.py's scheduler keeps a
    class's tests on one worker, in their order (with -p no:randomly, as tests/scripts/run_all.sh runs pytest)."""
    return more_envs()


def _continues_from(env, statuses, why):
    """The state the test before this one in its class left: its history's (kind, version, status), in order."""
    history = [(e['kind'], e['version'], e['status']) for e in env.history()]
    assert history == statuses, 'this test continues where %s ended, and that test did not get there: %r' % (why, history)


def _crontab():
    proc = subprocess.run(['crontab', '-l'], capture_output=True, text=True, check=False)
    return proc.stdout.splitlines() if proc.returncode == 0 else []


def _remove_cron_entries(root):
    """Remove the crontab entries of the environment's apps (backend_cron_jobs), named after their deploy root."""
    lines = _crontab()
    kept = [line for line in lines if root not in line]
    if kept != lines:
        subprocess.run(['crontab', '-'], input=''.join(line + '\n' for line in kept), text=True, check=True)


def _pm2_homes(root):
    homes = []
    for dirpath, dirnames, dummy in os.walk(root):
        if os.path.basename(dirpath) == 'pm2':
            homes.append(dirpath)
            dirnames[:] = []
    return homes


def _s3(stack):
    return boto3.client('s3', endpoint_url=stack['RUNBOOK_S3_ENDPOINT_URL'], region_name='us-east-1')


def _drop_bucket(stack, bucket):
    client = _s3(stack)
    try:
        for item in client.list_objects_v2(Bucket=bucket).get('Contents', []):
            client.delete_object(Bucket=bucket, Key=item['Key'])
        client.delete_bucket(Bucket=bucket)
    except Exception:  # the bucket may not exist when the test failed early
        pass


def _sample_copy(tmp_path, failing_migration=False, new_migration=False, rollouts=None):
    """A copy of the sample backend as a new version's source, optionally with a migration that fails half-way, a
    new migration that succeeds, or the flag rollouts of its own deploy/runbook.yml ([(name, steps)])."""
    source = tmp_path / 'backend'
    shutil.copytree(os.path.join(REPO, 'sample_app', 'backend'), source)
    if new_migration:
        migration = source / 'prisma' / 'migrations' / '20261201000000_add_case_priority'
        migration.mkdir()
        (migration / 'migration.sql').write_text('ALTER TABLE "cases" ADD COLUMN "priority" INTEGER NOT NULL DEFAULT 0;\n')
    if rollouts:
        (source / 'deploy').mkdir()
        (source / 'deploy' / 'runbook.yml').write_text(json.dumps(
            {'runbook_flag_rollouts': [{'name': name, 'steps': steps} for name, steps in rollouts]}))
    if failing_migration:
        migration = source / 'prisma' / 'migrations' / '20261201000000_retitle_cases'
        migration.mkdir()
        # The first statement changes data, the second fails: the migration is left failed and half applied.
        (migration / 'migration.sql').write_text(
            'UPDATE "cases" SET "title" = upper("title")\n;\nINSERT INTO "no_such_table" VALUES (1)\n;\n')
    return str(source)


@pytest.fixture
def history_bucket(stack):
    """A private S3 bucket for the history mirror and the reports beside it."""
    bucket = 'deploy-report-' + uuid.uuid4().hex[:8]
    _s3(stack).create_bucket(Bucket=bucket)
    # The endpoint and region are the local inventory's runbook_aws (the history's S3 defaults to them).
    yield {'deployment_history_s3_bucket': bucket, 'deployment_history_s3_prefix': 'runbook/history'}
    _drop_bucket(stack, bucket)


DEPLOY_HOOK_POINTS = ('before_build', 'after_build', 'before_database', 'after_database', 'before_backends',
                      'after_backends', 'before_release', 'after_release')


def _check_success_report(env, entry, result, elapsed, history_bucket):
    """The deploy_report callback's record of a successful first deployment: numbers that add up, and no secret."""
    record = report_of(entry)
    assert record['status'] == 'succeeded' and record['version'] == 'v1.0.0' and record['environment'] == env.name
    assert record['run_id'] == entry['run_id'] and record['hosts'] == ['app1'] and record['previous_version'] == ''
    check_timeline(record)
    # The record's duration is the run's. The test's clock also counts ansible-playbook's start-up, fact gathering
    # before the run record starts, and the report upload and exit after it ends: about 20 s here, but those grow with
    # the machine's load like everything else (45 s of 411 s in a CI run at load 12), so the allowance is a share.
    assert elapsed - max(20, 0.15 * elapsed) < record['duration_s'] <= elapsed, (record['duration_s'], elapsed)
    assert [p['name'] for p in record['timeline']] == ['check', 'build', 'database', 'backends', 'release', 'finish']
    # The runbook's numbers: backup, migrations, smoke tests, watch window, what changed.
    assert record['backup']['s3_uri'] == entry['backup']['s3_uri'] and record['backup']['sha256']
    assert record['migrations']['applied'] == entry['migrations'] and len(entry['migrations']) >= 2, record['migrations']
    assert record['smoke']['passed'] is True and record['smoke']['success_rate'] == 100.0, record['smoke']
    # The inventory's three smoke checks, not the flag rollout's health gate that ran after them (issue 17).
    assert record['smoke']['checks_counted'] == 3 and record['rollout_health_checks']['passed'] is True, record
    assert record['watch'], record
    # Runbook 000 "Verify Frontend": the site (moto's S3 here) served this build's own index.html after the sync.
    assert record['frontend_verified'] == {'url': '%s/sample-app-frontend-%s/index.html' % (
        env.stack['RUNBOOK_S3_ENDPOINT_URL'], env.name), 'version': 'v1.0.0', 'serves_build': True, 'status': 200}, record
    assert record['rollback']['taken'] is False and record['failure'] is None
    assert any(c['task'].startswith('runbook.deploy.backend') or 'release' in c['task'].lower() for c in record['changed'])
    markdown, page = read(entry['report']['md']), read(entry['report']['html'])
    assert '| Total deployment time |' in markdown and '| Rollback required | no |' in markdown
    # Self-contained: no scripts, stylesheets, images or fonts from anywhere.
    for fragment in ('<script', '<link', '<img', 'src=', 'url(', '@import'):
        assert fragment not in page, fragment
    assert page.count('class="row"') == 6 and '<style>' in page
    # Uploaded beside the history in S3, and the history points at them.
    client = _s3(env.stack)
    bucket = history_bucket['deployment_history_s3_bucket']
    base = 'runbook/history/reports/%s/%s' % (env.name, entry['run_id'])
    assert entry['report']['s3_uri'] == 's3://%s/%s.html' % (bucket, base)
    uploaded = {kind: client.get_object(Bucket=bucket, Key='%s.%s' % (base, kind))['Body'].read().decode()
                for kind in ('json', 'md', 'html')}
    assert json.loads(uploaded['json']) == record
    history_copy = client.get_object(Bucket=bucket, Key='runbook/history/%s.jsonl' % env.name)['Body'].read().decode()

    # No secret anywhere: the run's output, the three reports, the history, the S3 copies.
    outputs = {'stdout': result.output, 'json': read(entry['report']['json']), 'md': markdown, 'html': page,
               'history': read(os.path.join(env.root, 'history', env.name + '.jsonl')), 'history-s3': history_copy}
    outputs.update(('s3-' + kind, text) for kind, text in uploaded.items())
    for name, text in outputs.items():
        for secret in (HOOK_TOKEN, BEARER, EXTRA_PASSWORD, SECRET_TOKEN, env.stack['RUNBOOK_PG_PASSWORD'],
                       env.stack['AWS_SECRET_ACCESS_KEY']):
            assert secret not in text, (name, secret)


def _play_until(env, playbook, marker, signum, timeout=300, **extra):
    """Run a playbook and kill its whole process group with signum as soon as its output shows marker (a task
    banner): an operator's Ctrl-C, or AWX cancelling the job. Returns (rc, output)."""
    proc = subprocess.Popen(env.command(playbook, **extra), env=dict(env.env(), PYTHONUNBUFFERED='1'),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    # A watchdog bounds the read loop: a run that never prints the marker is killed at the deadline.
    watchdog = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                break
        # Ansible may swallow one signal at an unlucky moment (seen with SIGINT: the run went on to the end); an
        # operator presses Ctrl-C again. At most 10 times, a second apart.
        for dummy in range(10):
            os.killpg(proc.pid, signum)
            try:
                lines.append(proc.communicate(timeout=1)[0])
                break
            except subprocess.TimeoutExpired:
                continue
        lines.append(proc.communicate(timeout=120)[0] or '')
    finally:
        watchdog.cancel()
    output = ''.join(lines)
    print('==== %s %s killed at %r: rc=%s\n%s' % (playbook, json.dumps(extra), marker, proc.returncode, output[-6000:]))
    assert marker in output, output[-6000:]
    return proc.returncode, output


def _flags(env):
    return dict(sql(env.stack, env.db, 'SELECT flag_name, enabled FROM feature_flags'))


def _flag_states(env):
    """{flag: (enabled, rollout percentage)}."""
    return {name: (enabled, percentage) for name, enabled, percentage in
            sql(env.stack, env.db, 'SELECT flag_name, enabled, rollout_percentage FROM feature_flags')}


def _objects(stack, bucket):
    """{key: ETag} of every object in the bucket."""
    return {item['Key']: item['ETag'] for item in _s3(stack).list_objects_v2(Bucket=bucket).get('Contents', [])}


def _pm2_pids(env, host='app1'):
    """{app name: [pid, ...]} of the host's PM2 processes."""
    home = os.path.join(env.deploy_to(host), 'pm2')
    listing = subprocess.run([PM2, 'jlist'], env=dict(os.environ, PM2_HOME=home), capture_output=True, text=True,
                             check=True, timeout=60).stdout
    procs = json.loads(listing[listing.index('['):])
    return {name: sorted(p['pid'] for p in procs if p['name'] == name) for name in sorted({p['name'] for p in procs})}


def _running_releases(env, host='app1'):
    """{app name: set of real directories its processes run in} (PM2's list, then each pid's /proc cwd)."""
    pm2_env = dict(os.environ, PM2_HOME=os.path.join(env.deploy_to(host), 'pm2'))
    listing = subprocess.run([PM2, 'jlist'], env=pm2_env, capture_output=True, text=True, check=True).stdout
    apps = json.loads(listing[listing.index('['):])
    result = {}
    for app in apps:
        if app.get('pid'):
            result.setdefault(app['name'], set()).add(os.path.realpath('/proc/%d/cwd' % app['pid']))
    return result


# Scenarios that continue from one another: each class is one environment (or two, production beside staging), its
# tests run in order on one worker. tests/conftest.py's scheduler starts the classes in the order written here: the
# longest first, so that it never runs alone at the end.
class TestAFailedFirstDeploymentThenAnAwxJobThenAFailedSmokeTestThenProduction(object):
    def test_a_failed_first_deployment_says_there_is_nothing_to_roll_back_to(self, shared_env):
        """The first deployment of an environment fails its smoke test. Nothing ran before, so there is nothing to
        roll back to: the message says so and in what state the host is, and the release that just failed is not
        smoke-tested again as "the release rolled back to" (which used to report "The rollback failed too")."""
        env = shared_env
        failed = env.play('deploy_staging.yml', runbook_version='v0.9.0', sample_app_fault='smoke')
        assert failed.rc != 0, failed
        assert 'failed in the backends phase' in failed.output, failed
        assert 'Nothing to roll back to: this was the first deployment of %s' % env.name in failed.output, failed
        assert 'The rollback failed too' not in failed.output and 'Rolled back:' not in failed.output, failed
        assert env.current() == 'v0.9.0'
        entry = env.history()[-1]
        assert entry['status'] == 'failed' and entry['previous_version'] == '', entry
        assert entry['running_version'] == 'v0.9.0', entry
        assert entry['failure']['phase'] == 'backends' and 'rollback_failed' not in entry['failure'], entry
        # The app's own explanation, from its PM2 error log, comes with the failed check.
        assert ("Last lines of %s-app1-api's error log:" % env.name) in entry['failure']['message'], entry['failure']
        assert 'GET /api/cases failed: relation "cases" does not exist' in entry['failure']['message'], entry['failure']
        assert not os.path.exists(os.path.join(env.root, 'deploy', env.name, 'deploy.lock'))

    def test_the_playbooks_run_under_ansible_runner_with_extra_vars_and_report_the_job(self, shared_env, tmp_path, monkeypatch):
        """As AWX runs a job template of the AWX kit: ansible-runner in the project (awx/), its wrapper playbook and
        its ansible.cfg (which enables the deploy_report callback), the extra vars AWX passes (with the job id and the
        launching user). The report is named after the job and records who launched it."""
        import ansible_runner

        env = shared_env
        _continues_from(env, [('deploy', 'v0.9.0', 'failed')], 'the failed first deployment')
        private = tmp_path / 'runner'
        private.mkdir()
        for key, value in env.env().items():
            if key.startswith(('RUNBOOK_', 'AWS_', 'ANSIBLE_')):
                monkeypatch.setenv(key, value)
        extravars = dict(env.extra, runbook_version='v1.0.0', awx_job_id=4242, awx_user_name='dana')
        monkeypatch.delenv('ANSIBLE_CALLBACKS_ENABLED', raising=False)
        run = ansible_runner.run(private_data_dir=str(private), project_dir=os.path.join(REPO, 'awx'),
                                 playbook='deploy_staging.yml', inventory=env.inventory, extravars=extravars, quiet=True,
                                 envvars={'RUNBOOK_REPO': REPO})
        assert run.status == 'successful' and run.rc == 0, run.stdout.read()[-6000:]
        assert env.health()['version'] == 'v1.0.0'
        entry = env.history()[-1]
        assert entry['status'] == 'succeeded'
        assert entry['run_id'] == '4242' and entry['actor'] == 'dana', entry
        record = report_of(entry)
        assert record['status'] == 'succeeded' and record['run_id'] == '4242' and record['actor'] == 'dana'
        check_timeline(record)
        assert record['report']['json'].endswith('/reports/%s/4242.json' % env.name)

    def test_failed_smoke_test_rolls_back_automatically_keeps_the_data_and_reports_it(self, shared_env):
        """The AWX job's v1.0.0 runs; v1.1.0 fails its smoke test and is rolled back."""
        env = shared_env
        _continues_from(env, [('deploy', 'v0.9.0', 'failed'), ('deploy', 'v1.0.0', 'succeeded')], 'the AWX job')
        env.callbacks = CALLBACK
        before = env.snapshot()

        broken = env.play('deploy_staging.yml', runbook_version='v1.1.0', sample_app_fault='smoke')
        assert broken.rc != 0, broken
        assert 'failed in the backends phase' in broken.output, broken
        assert 'Rolled back: v1.0.0 runs again; the database was kept as it is' in broken.output, broken
        # The previous release answers again, the broken one is marked bad, the data is untouched.
        assert env.current() == 'v1.0.0'
        assert env.health()['version'] == 'v1.0.0'
        assert os.path.exists(os.path.join(env.deploy_to(), 'releases', 'v1.1.0', 'BAD'))
        assert env.snapshot() == before
        entry = env.history()[-1]
        assert entry['status'] == 'rolled_back' and entry['running_version'] == 'v1.0.0', entry
        assert entry['failure']['phase'] == 'backends' and 'cases API' in entry['failure']['message'], entry
        assert ("Last lines of %s-app1-api's error log:" % env.name) in entry['failure']['message'], entry['failure']
        assert entry['phases']['rollback']['status'] == 'ok'
        assert entry['smoke_passed'] is False
        assert any('roll' in m.get('text', '').lower() for m in messages(env.webhook)), messages(env.webhook)
        assert not os.path.exists(os.path.join(env.root, 'deploy', env.name, 'deploy.lock'))

        # The report records the failure and the rollback.
        record = report_of(entry)
        assert record['run_id'] == entry['run_id'] and record['status'] == 'rolled_back'
        assert record['previous_version'] == 'v1.0.0' and record['running_version'] == 'v1.0.0'
        assert record['failure']['phase'] == 'backends' and 'cases API' in record['failure']['message'], record['failure']
        assert record['rollback']['taken'] is True and record['rollback']['status'] == 'ok', record['rollback']
        assert 'cases API' in record['rollback']['why'] and record['rollback']['result'], record['rollback']
        assert record['smoke']['passed'] is False and record['smoke']['success_rate'] < 100, record['smoke']
        assert record['smoke']['hosts']['app1']['failed_checks'] == ['cases API reads the database'], record['smoke']
        # The rollback smoke-tested what it went back to: its result is kept apart.
        assert record['rollback']['smoke']['passed'] is True, record['rollback']
        names = [p['name'] for p in record['timeline']]
        assert names == ['check', 'build', 'database', 'backends', 'rollback', 'finish'], record['timeline']
        # The backends phase failed; when the history has no end for it, the timeline ends it where the rollback begins.
        assert {p['name']: p['status'] for p in record['timeline']}['backends'] in ('failed', 'unfinished'), record['timeline']
        check_timeline(record)
        markdown = read(entry['report']['md'])
        assert '| Rollback required | yes: app1:' in markdown and '## Failure' in markdown
        # The AWX job's deploy has its own report; the two never share a file.
        assert env.history()[-2]['report']['json'] != entry['report']['json']
        assert os.path.isfile(env.history()[-2]['report']['json'])

    def test_production_gates_then_three_hosts_in_batches_with_one_backup_and_one_migration(self, shared_env,
                                                                                            more_envs):
        """Production, beside this staging environment (v1.0.0 succeeded there as the AWX job, v1.1.0 was rolled
        back): its gates refuse first (typos, no approval, no off-host backup, a version staging never ran
        successfully, the gates switched off), then v1.0.0 goes to three hosts in batches, with one backup and one
        migration run."""
        staging = shared_env
        _continues_from(staging, [('deploy', 'v0.9.0', 'failed'), ('deploy', 'v1.0.0', 'succeeded'),
                                  ('deploy', 'v1.1.0', 'rolled_back')], 'the failed smoke test')
        production = more_envs(inventory='local-production', port=False)
        production.extra.update(deployment_staging_environment=staging.name, runbook_stack_dir=staging.root)
        # The inventory's fixed ports (base + 11 to 13), below the kernel's ephemeral range (32768 and up here): by
        # default (39111 to 39113) they are in it, where a concurrent test's server or client socket can hold one
        # (a CI run saw 39111 answer 405, another test's webhook recorder).
        production.environment['RUNBOOK_DEMO_PORT_BASE'] = str(PRODUCTION_PORT_BASE)
        # The two environments share the history directory (as they share a controller or an S3 bucket).
        shutil.rmtree(production.root)
        production.root = staging.root
        assert production.play('local_sample_app.yml').rc == 0

        # A misspelt role variable would be ignored silently (here: no off-host backup, no smoke checks), a misspelt
        # migration tool found after the build and the backup: refused first, every one named at once.
        typos = production.play('deploy_production.yml', runbook_version='v1.0.0', backup_s3_buket='typo', smoke_check=[],
                                migrate_tool='prisam')
        assert typos.rc != 0, typos
        for expected in ('(1) backup_s3_buket (did you mean backup_s3_bucket?) is named like a role variable',
                         '(2) smoke_check (did you mean smoke_checks?) is named like a role variable',
                         '(3) role migrate: value of migrate_tool must be one of: prisma, flyway, got: prisam'):
            assert expected in typos.output, (expected, typos)
        # Without the approval and without an off-host backup: both refusals in one message.
        no_approval = production.play('deploy_production.yml', runbook_version='v1.0.0', backup_s3_bucket='')
        assert no_approval.rc != 0 and 'needs an approval' in no_approval.output, no_approval
        assert ('needs a sign-off by each of Product Owner, Tech Lead: no sign-off by the Product Owner; no sign-off by '
                'the Tech Lead' in no_approval.output), no_approval
        assert 'needs an off-host backup before its migrations: set backup_s3_bucket' in no_approval.output, no_approval
        # 003's approval matrix (inventories/local-production): the Product Owner and the Tech Lead, as the AWX
        # survey's text gives them.
        approved = dict(runbook_approvals='Product Owner: Dana\nTech Lead: Lee', runbook_ticket='CHG-1')
        # v1.1.0 failed in staging (rolled back): not staged.
        not_staged = production.play('deploy_production.yml', runbook_version='v1.1.0', **approved)
        assert not_staged.rc != 0 and 'has no successful deployment' in not_staged.output, not_staged
        # The gates of a protected environment cannot be skipped: not by running the shared flow the production playbook
        # imports, nor by switching them off with extra vars.
        direct = production.play('deploy.yml', runbook_version='v1.0.0')
        assert direct.rc != 0 and 'needs an approval' in direct.output, direct
        switched_off = production.play('deploy.yml', runbook_version='v1.1.0', deployment_require_approval=False,
                                       deployment_require_staging=False, **approved)
        assert switched_off.rc != 0 and 'has no successful deployment' in switched_off.output, switched_off
        assert production.history() == []

        deployed = production.play('deploy_production.yml', runbook_version='v1.0.0', **approved)
        assert deployed.rc == 0, deployed
        for host, port in (('app1', PRODUCTION_PORT_BASE + 11), ('app2', PRODUCTION_PORT_BASE + 12),
                           ('app3', PRODUCTION_PORT_BASE + 13)):
            assert production.current(host) == 'v1.0.0'
            assert production.health(port)['version'] == 'v1.0.0'
        # Three batches of one host for the backends; the backup and the migrations ran once, on one host.
        assert deployed.output.count('PLAY [Backends - release, reload and smoke tests, in batches]') == 3
        backup_task = deployed.output.split('TASK [runbook.deploy.backup : Back up the database with pg_backup]')[1]
        assert len(re.findall(r'^(?:changed|ok): \[app\d\]', backup_task.split('TASK [')[0], re.M)) == 1
        assert len(sql(production.stack, production.db, 'SELECT 1 FROM _prisma_migrations')) == 3
        entry = production.history()[-1]
        assert entry['status'] == 'succeeded' and entry['ticket'] == 'CHG-1', entry
        assert entry['approved_by'] == 'Dana (Product Owner), Lee (Tech Lead)', entry
        assert entry['approvals'] == [{'role': 'Product Owner', 'name': 'Dana'}, {'role': 'Tech Lead', 'name': 'Lee'}]
        assert entry['hosts'] == ['app1', 'app2', 'app3']


class TestAStagingDeploymentThenACheckRunThenTheRunItPredicted(object):
    """One staging environment: its first deployment (with a concurrent one refused by the lock), the same deployment
    again, a check run of the next version, and the run it predicted."""

    def test_staging_deploy_serves_records_reports_and_reruns_without_change(self, shared_env, history_bucket):
        """The first deployment of an environment, its history and report (the deploy_report callback, with secrets fed
        through the run and a history mirror in S3), then the same deployment again, which changes nothing. A second
        deployment started while the first holds the lock is refused, names deployment_lock_break, and changes and
        records nothing."""
        env = shared_env
        env.callbacks = CALLBACK
        extra = dict(history_bucket, **secret_extra_vars(env.webhook.url))
        # The project's own scripts at every phase boundary (runbook 000's npm run smoke:staging, 004's
        # validate:data-integrity), here each noting where it ran.
        hooks_ran = os.path.join(env.root, 'hooks.log')
        extra['deployment_hooks'] = {point: ['echo "$RUNBOOK_HOOK $RUNBOOK_VERSION $(basename $(pwd -P))" >> %s' % hooks_ran]
                                     for point in DEPLOY_HOOK_POINTS}
        began = time.monotonic()
        first, second = env.play_while_locked(
            'deploy_staging.yml', lambda: env.play('deploy_staging.yml', runbook_version='v1.0.0', **extra),
            runbook_version='v1.0.0', **extra)
        elapsed = time.monotonic() - began
        assert second.rc != 0, second
        assert 'Another deployment of %s holds the lock' % env.name in second.output, second
        assert 'deployment_lock_break' in second.output
        assert first.rc == 0, first
        assert env.health() == {'status': 'healthy', 'version': 'v1.0.0'}
        with urllib.request.urlopen('http://127.0.0.1:%d/api/cases' % env.port, timeout=5) as response:
            assert json.loads(response.read())['count'] == 5000
        # Migrations applied once, verified, and the schema is there.
        names = [r[0] for r in sql(env.stack, env.db, 'SELECT migration_name FROM _prisma_migrations '
                                                      'WHERE finished_at IS NOT NULL ORDER BY 1')]
        assert len(names) == 3, names
        # The frontend is published with this version.
        index = _s3(env.stack).get_object(Bucket='sample-app-frontend-' + env.name, Key='index.html')['Body'].read()
        assert b'v1.0.0' in index
        # The history records the success, its phases and the backup.
        # The refused run recorded nothing and released nothing: one entry, the first's, and no lock after it.
        assert [e['status'] for e in env.history()] == ['succeeded']
        entry = env.history()[-1]
        assert entry['status'] == 'succeeded' and entry['version'] == 'v1.0.0' and entry['smoke_passed'] is True, entry
        assert entry['running_version'] == 'v1.0.0'
        assert entry['backup']['s3_uri'].startswith('s3://sample-app-backups/%s/' % env.name), entry
        assert {'database', 'backends', 'release'} <= set(entry['phases']), entry['phases']
        assert all(phase['status'] == 'ok' for phase in entry['phases'].values()), entry['phases']
        # The lock is released; the webhook heard the start and the success, without the token in the URL.
        assert not os.path.exists(os.path.join(env.root, 'deploy', env.name, 'deploy.lock'))
        texts = [m.get('text', '') for m in messages(env.webhook)]
        assert any('v1.0.0' in t for t in texts), texts
        _check_success_report(env, entry, first, elapsed, history_bucket)
        # Each hook once, in the runbook's order; in the source before the build, in the release after it.
        with open(hooks_ran) as handle:
            assert handle.read().splitlines() == ['%s v1.0.0 %s' % (point, 'backend' if point == 'before_build' else 'v1.0.0')
                                                  for point in DEPLOY_HOOK_POINTS]
        assert [(h['hook'], h['host'], h['rc']) for h in report_of(entry)['hooks']] == [
            (point, 'app1', 0) for point in DEPLOY_HOOK_POINTS]

        again = env.play('deploy_staging.yml', runbook_version='v1.0.0', **extra)
        assert again.rc == 0, again
        assert again.recap()['app1']['changed'] == 0, again
        # A re-run of a finished deployment runs no hook.
        with open(hooks_ran) as handle:
            assert len(handle.read().splitlines()) == len(DEPLOY_HOOK_POINTS)
        assert env.history()[-1]['status'] == 'succeeded'
        # The second run has its own report; the two never share a file.
        assert env.history()[-1]['report']['json'] != entry['report']['json']
        for output in (first.output, second.output, again.output):
            assert SECRET_TOKEN not in output
            assert env.stack['RUNBOOK_PG_PASSWORD'] not in output

    def test_a_check_run_changes_nothing_and_predicts_the_run_that_follows(self, shared_env, tmp_path):
        """ansible-playbook --check --diff of a new version: a migration, a flag rollout named by the release's own
        deploy/runbook.yml, a frontend change. The check completes, changes nothing, reports its predictions under
        <run id>.check (status "checked"); the real run that follows changes exactly what was predicted."""
        env = shared_env
        _continues_from(env, [('deploy', 'v1.0.0', 'succeeded')] * 2, 'the first deployment and its re-run')
        env.callbacks = CALLBACK
        source = _sample_copy(tmp_path, new_migration=True, rollouts=[('new_case_view', [25, 100]), ('case_priority', [50, 100])])
        bucket = 'sample-app-frontend-' + env.name
        before = {'objects': _objects(env.stack, bucket), 'flags': _flag_states(env), 'data': env.snapshot(),
                  'migrations': sql(env.stack, env.db, 'SELECT migration_name FROM _prisma_migrations ORDER BY 1'),
                  'releases': sorted(os.listdir(os.path.join(env.deploy_to(), 'releases'))),
                  'frontend': sorted(os.listdir(os.path.join(env.root, 'deploy', env.name, 'frontend'))),
                  'history': env.history(), 'pm2': _pm2_pids(env)}

        check = env.play('deploy_staging.yml', '--check', '--diff', runbook_version='v1.2.0', backend_source_dir=source)
        assert check.rc == 0, check
        # Nothing changed: the data, the migrations table, the releases, the bucket, the flags, the processes, the
        # history; no preview is left, no lock.
        after = {'objects': _objects(env.stack, bucket), 'flags': _flag_states(env), 'data': env.snapshot(),
                 'migrations': sql(env.stack, env.db, 'SELECT migration_name FROM _prisma_migrations ORDER BY 1'),
                 'releases': sorted(os.listdir(os.path.join(env.deploy_to(), 'releases'))),
                 'frontend': sorted(os.listdir(os.path.join(env.root, 'deploy', env.name, 'frontend'))),
                 'history': env.history(), 'pm2': _pm2_pids(env)}
        assert after == before
        assert env.current() == 'v1.0.0' and env.health()['version'] == 'v1.0.0'
        assert not os.path.exists(os.path.join(env.root, 'deploy', env.name, 'deploy.lock'))
        # What the log says it would do.
        for line in ('Would build sample-app v1.2.0', 'Would back up %s' % env.db,
                     'would apply 20261201000000_add_case_priority',
                     "Would set postgres flag 'case_priority': absent -> on at 50 %",
                     'Would smoke-test app1 once it runs v1.2.0', 'Would watch v1.2.0'):
            assert line in check.output, (line, check)
        # Its report: a check, under its own name, with the predictions.
        reports = os.path.join(env.root, 'history', 'reports', env.name)
        checked = [name for name in os.listdir(reports) if name.endswith('.check.json')]
        assert len(checked) == 1, os.listdir(reports)
        predicted = json.loads(read(os.path.join(reports, checked[0])))
        assert predicted['status'] == 'checked' and predicted['check_mode'] is True, predicted['status']
        assert predicted['running_version'] == 'v1.0.0'
        page = read(os.path.join(reports, checked[0][:-len('json')] + 'html'))
        assert 'succeeded' not in page.split('<h1>')[1].split('</h1>')[0] and 'Check run' in page, page[:600]
        changes = predicted['changes']
        assert changes['migrations'] == ['20261201000000_add_case_priority'], changes
        assert changes['built'] == ['app1'] and changes['backup']['db'] == env.db, changes
        assert changes['apps'] == {'app1': {'%s-app1-api' % env.name: 'reload', '%s-app1-worker' % env.name: 'reload'}}
        assert 'index.html' in changes['frontend']['uploaded'] and len(changes['frontend']['deleted']) == 1, changes
        assert list(changes['flags']) == ['case_priority'], changes

        # With heartbeats, as by default: the backup and each build command run in the background (a long backup or
        # build prints a line every few seconds); the result is the same.
        real = env.play('deploy_staging.yml', runbook_version='v1.2.0', backend_source_dir=source, backup_heartbeat=30,
                        backend_build_heartbeat=30)
        assert real.rc == 0, real
        assert 'TASK [runbook.deploy.backup : Wait for the backup, with a heartbeat every backup_heartbeat seconds]' in real.output
        assert 'Wait, with a heartbeat every backend_build_heartbeat seconds, for npm run build' in real.output
        entry = env.history()[-1]
        assert entry['status'] == 'succeeded' and entry['version'] == 'v1.2.0', entry
        # The prediction was the run.
        assert entry['changes'] == changes, (entry['changes'], changes)
        assert report_of(entry)['changes'] == changes
        # And the world moved as predicted: the objects uploaded and deleted, the migration, the flag.
        objects = _objects(env.stack, bucket)
        assert sorted(set(objects) - set(before['objects'])) == sorted(k for k in changes['frontend']['uploaded']
                                                                       if k not in before['objects'])
        assert not set(changes['frontend']['deleted']) & set(objects)
        assert sorted(k for k in objects if k in before['objects'] and objects[k] != before['objects'][k]) == sorted(
            k for k in changes['frontend']['uploaded'] if k in before['objects'])
        assert _flag_states(env)['case_priority'] == (True, 100), _flag_states(env)


class TestAFailedMigrationThenAnInterruptedOneThenAKilledReload(object):
    """A migration that fails (no app changed; the rollback restores the backup), a deployment interrupted during
    its migrations (undone by the rollback), then a deployment killed during its reload (finished by its re-run)."""

    def test_failed_migration_stops_before_any_app_change_and_rollback_restores(self, shared_env, tmp_path):
        env = shared_env
        # The database and the backends are this class's subject: no frontend to build and publish (the other
        # classes publish it), which spares each deployment a build and three syncs.
        env.extra['runbook_frontend'] = False
        # Runbook 002's hourly refresh, as a cron job of the release (a schedule that never fires: 30 February).
        env.extra['backend_cron_jobs'] = [{'name': 'refresh-views', 'schedule': '0 0 30 2 *', 'command': 'true'}]
        cron_paused = os.path.join(env.deploy_to(), 'shared', 'cron', 'paused')
        assert env.play('deploy_staging.yml', runbook_version='v1.0.0').rc == 0
        assert '#Ansible: runbook.deploy %s refresh-views' % env.deploy_to() in _crontab()
        assert not os.path.exists(cron_paused)
        before = env.snapshot()
        flags_before = _flags(env)
        source = _sample_copy(tmp_path, failing_migration=True)

        failed = env.play('deploy_staging.yml', runbook_version='v1.1.0', backend_source_dir=source)
        assert failed.rc != 0, failed
        assert 'failed in the database phase' in failed.output and '20261201000000_retitle_cases' in failed.output, failed
        assert 'No app was changed' in failed.output
        # No app change: v1.1.0 was built beside v1.0.0 (its migrations ran from it) but v1.0.0 serves;
        # the half-applied migration changed data.
        assert env.current() == 'v1.0.0'
        assert os.path.exists(os.path.join(env.deploy_to(), 'releases', 'v1.1.0', 'RELEASE.json'))
        assert env.health()['version'] == 'v1.0.0'
        assert env.snapshot() != before
        entry = env.history()[-1]
        assert entry['status'] == 'failed' and entry['failure']['phase'] == 'database', entry
        # No app changed: what ran before runs (the history used to record an empty running_version).
        assert entry['running_version'] == 'v1.0.0', entry
        backup = entry['backup']['s3_uri']
        bucket, key = backup[len('s3://'):].split('/', 1)
        assert _s3(env.stack).head_object(Bucket=bucket, Key=key)['ContentLength'] > 0
        # The cron jobs stay paused like maintenance mode: the database is as the failed migration left it.
        with open(cron_paused) as handle:
            assert handle.read().startswith('deployment '), 'the database phase did not pause the cron jobs'

        refused = env.play('rollback.yml')
        assert refused.rc != 0 and 'rollback_database' in refused.output, refused

        # As a deployment's database phase: maintenance mode on and the sync paused while the backup goes back in,
        # both as they were afterwards; then the release rolled back to is watched (runbook 004).
        restored = env.play('rollback.yml', rollback_database='restore', runbook_maintenance_mode=True,
                            runbook_pause_sync=True)
        assert restored.rc == 0, restored
        # Every row as before the failed deployment; maintenance mode, never set before, is now set explicitly off
        # (put back as read: a flag that does not exist counts as off).
        after = env.snapshot()
        assert {t: v for t, v in after.items() if t != 'feature_flags'} == {
            t: v for t, v in before.items() if t != 'feature_flags'}
        assert _flags(env) == dict(flags_before, maintenance_mode=False), (flags_before, _flags(env))
        assert env.current() == 'v1.0.0' and env.health()['version'] == 'v1.0.0'
        # The rollback resumed the cron jobs, v1.0.0's, once the backup was back in.
        assert not os.path.exists(cron_paused)
        assert '#Ansible: runbook.deploy %s refresh-views' % env.deploy_to() in _crontab()
        entry = env.history()[-1]
        assert entry['kind'] == 'rollback' and entry['status'] == 'succeeded', entry
        assert entry['rollback']['restored_from'], entry
        assert entry['pre_deployment'] == {'maintenance': 'off', 'sync': 'running'} and entry['flags_restored'] is True
        before_restore = restored.output.split('TASK [runbook.deploy.rollback')[0]
        # Maintenance mode went on for the restore; the sync, which the failed deployment had left paused, stayed so
        # (nothing to change) until both were put back.
        maintenance, paused = before_restore.split('TASK [Switch maintenance mode on while the database goes back]')[1] \
            .split('TASK [Pause the background sync and wait until its queue drains]')
        assert 'changed: [' in maintenance and 'TASK [runbook.deploy.flags : ' in paused, restored
        assert 'TASK [runbook.deploy.backend : Wait for the cron jobs already running to finish]' in paused, restored
        watched = restored.output.split('TASK [Watch the release rolled back to]')[1]
        assert 'TASK [runbook.deploy.watch : Show what the watch saw per threshold]' in watched, restored
        assert '"msg": "keep after' in watched, restored

    def test_a_deploy_interrupted_during_migrations_is_undone_by_rollback(self, shared_env):
        """SIGINT during the migrations: rollback.yml takes the stale lock over, records the run as interrupted, and
        puts maintenance mode and the sync back as they were before the deployment (exit 0 only when it could).
        It continues from the failed migration's environment: v1.0.0 runs again, v1.1.0's release is left built."""
        env = shared_env
        _continues_from(env, [('deploy', 'v1.0.0', 'succeeded'), ('deploy', 'v1.1.0', 'failed'),
                              ('rollback', 'v1.0.0', 'succeeded')], 'the failed migration')
        earlier = len(env.history())

        rc, output = _play_until(env, 'deploy_staging.yml', 'TASK [runbook.deploy.migrate : ', signal.SIGINT,
                                 runbook_version='v1.2.0', runbook_maintenance_mode=True)
        assert rc != 0
        lock = os.path.join(env.root, 'deploy', env.name, 'deploy.lock')
        assert os.path.exists(os.path.join(lock, 'owner.json'))
        assert _flags(env)['maintenance_mode'] is True and _flags(env)['auto_sync'] is False

        rolled = env.play('rollback.yml', rollback_database='keep', runbook_maintenance_mode=True)
        assert rolled.rc == 0, rolled
        assert _flags(env) == {'auto_sync': True, 'maintenance_mode': False, 'new_case_view': True}
        assert env.current() == 'v1.0.0' and env.health()['version'] == 'v1.0.0'
        assert not os.path.exists(os.path.join(env.deploy_to(), 'releases', 'v1.2.0', 'BAD'))
        assert not os.path.exists(lock)
        history = env.history()[earlier:]
        assert [(e['kind'], e['status']) for e in history] == [('deploy', 'interrupted'), ('rollback', 'succeeded')], history
        assert history[0]['version'] == 'v1.2.0' and history[1]['flags_restored'] is True, history

    def test_a_deploy_killed_during_the_reload_is_finished_by_its_re_run(self, shared_env):
        """SIGTERM right after the switch, before the PM2 reload: current is on the new release, the old code runs, maintenance on,
        the sync paused, the lock held. The re-run takes the lock over, reloads, and puts the flags back.
        Its watch sees a conditional threshold breached (runbook 001's "queue size > 1000": here a limit the idle
        queue is always over): the release stays, and the team gets the warning (decision MONITOR)."""
        env = shared_env
        _continues_from(env, [('deploy', 'v1.0.0', 'succeeded'), ('deploy', 'v1.1.0', 'failed'),
                              ('rollback', 'v1.0.0', 'succeeded'), ('deploy', 'v1.2.0', 'interrupted'),
                              ('rollback', 'v1.0.0', 'succeeded')], 'the rollback of the interrupted deployment')
        earlier = len(env.history())
        flags = _flags(env)
        assert flags == {'auto_sync': True, 'maintenance_mode': False, 'new_case_view': True}, flags

        rc, output = _play_until(env, 'deploy_staging.yml',
                                 'TASK [runbook.deploy.backend : Read the checksum of the shared environment file',
                                 signal.SIGTERM, runbook_version='v1.3.0', runbook_maintenance_mode=True)
        assert rc != 0
        lock = os.path.join(env.root, 'deploy', env.name, 'deploy.lock')
        assert os.path.exists(os.path.join(lock, 'owner.json'))
        assert env.current() == 'v1.3.0'
        assert env.health()['version'] == 'v1.0.0'
        assert _flags(env)['maintenance_mode'] is True and _flags(env)['auto_sync'] is False

        warned_before = len(_warnings(env))
        conditional = {'name': 'queue_size', 'metric': 'sync_queue_size', 'op': '<', 'value': 0, 'severity': 'conditional',
                       'escalate_after': 600}
        rerun = env.play('deploy_staging.yml', runbook_version='v1.3.0', runbook_maintenance_mode=True,
                         watch_thresholds=[conditional])
        assert rerun.rc == 0, rerun
        assert 'taking it over' in rerun.output, rerun
        assert 'monitor after' in rerun.output and 'monitor, no rollback: queue_size' in rerun.output, rerun
        [warning] = _warnings(env)[warned_before:]
        assert warning['text'] == 'Deployment warning: v1.3.0 on %s' % env.name, warning
        details = warning['attachments'][0]['text']
        assert 'Decision: MONITOR (no rollback)' in details and 'queue_size: sync_queue_size = 0' in details, details
        assert 'rollback after 600 s' in details, details
        # The new code runs (what the app answers and where its processes run), the flags are as before, no lock.
        assert env.health()['version'] == 'v1.3.0'
        release = os.path.realpath(os.path.join(env.deploy_to(), 'releases', 'v1.3.0'))
        running = _running_releases(env)
        assert running and all(dirs == {release} for dirs in running.values()), running
        assert _flags(env) == dict(flags, maintenance_mode=False)
        assert not os.path.exists(lock)
        history = env.history()[earlier:]
        assert [(e['version'], e['status']) for e in history] == [('v1.3.0', 'interrupted'), ('v1.3.0', 'succeeded')], history
        interrupted = history[0]
        assert interrupted['interrupted_by'] == history[1]['run_id'], interrupted
        assert interrupted['pre_deployment'] == {'maintenance': 'off', 'sync': 'running'}, interrupted
        assert history[1]['previous_version'] == 'v1.0.0' and history[1]['flags_restored'] is True, history[1]
