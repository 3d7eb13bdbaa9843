"""A team's own app, deployed from inventories/minimal/ as the README's "Deploy your own app" says.

tests/fixtures/notes_app differs from the sample app on every assumption the README names (health path and answer,
settings only from process.env, Prisma Client at run time, no build output directory) and its database belongs to an
owner that is not a superuser. The inventory used is inventories/minimal/ itself; a host_vars file adds only what
is particular to this machine (the host is this one, the stack's addresses, private paths and port) and what this
app adds over the minimal one (a flags table with a percentage column). Versions are tags of a git repository, as
the minimal inventory builds them. Two environments, each a chain of steps continuing from the one before it:
  - deployed from the start: the Check phase, the first deployment onto an empty database, a version adding a
    column and a flag, a restore rollback as the owner;
  - an install deployed by hand: its adoption (without a failed request), then a broken version that rolls back
    by itself to the adopted release.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
import yaml

from helpers import REPO, RequestLoop, free_port, sql

pytestmark = pytest.mark.slow

PLAYBOOK = os.path.join(REPO, '.venv', 'bin', 'ansible-playbook')
PM2 = os.path.join(REPO, 'node_modules', '.bin', 'pm2')
FIXTURE = os.path.join(REPO, 'tests', 'fixtures', 'notes_app')
# A password a DATABASE_URL recipe without percent-encoding would break.
OWNER_PASSWORD = 'n/otes@own:er#1'


def _git(cwd, *args):
    subprocess.run(['git', *args], cwd=cwd, check=True, capture_output=True,
                   env=dict(os.environ, GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@t', GIT_COMMITTER_NAME='t',
                            GIT_COMMITTER_EMAIL='t@t'))


def _app_repository(root):
    """The app's repository with three tags: v1, v2 (a column, a flags table, deploy/runbook.yml), v3 (broken)."""
    repo = os.path.join(root, 'notes.git')
    shutil.copytree(FIXTURE, repo, ignore=shutil.ignore_patterns('README.md'))
    _git(repo, 'init', '-q', '-b', 'main')
    _git(repo, 'add', '-A')
    _git(repo, 'commit', '-q', '-m', 'notes v1')
    _git(repo, 'tag', 'v1')
    shutil.copytree(FIXTURE + '_v2', repo, dirs_exist_ok=True)
    _git(repo, 'add', '-A')
    _git(repo, 'commit', '-q', '-m', 'notes v2: pinned notes behind a flag')
    _git(repo, 'tag', 'v2')
    index = os.path.join(repo, 'src', 'index.js')
    with open(index) as handle:
        code = handle.read()
    # v3 answers 500 on /healthz: the smoke test must catch it after the switch, and the deployment roll back.
    broken = code.replace("res.status(204).end();", "res.status(500).send('v3 cannot read its settings');")
    assert broken != code
    with open(index, 'w') as handle:
        handle.write(broken)
    _git(repo, 'commit', '-q', '-am', 'notes v3: broken')
    _git(repo, 'tag', 'v3')
    return repo


class NotesEnv(object):
    def __init__(self, stack, root, name):
        self.stack = stack
        self.root = root
        self.name = name
        self.db = name.replace('-', '_')
        self.owner = self.db + '_owner'
        self.port = free_port()
        self.deploy_to = os.path.join(root, 'srv', 'notes')
        self.pm2_home = os.path.join(root, 'pm2')
        self.inventory = os.path.join(root, 'inventory')

    def prepare(self):
        # What a DBA hands a team: a login that owns its database, nothing more (the first test grants CREATEDB).
        sql(self.stack, 'postgres', "CREATE ROLE %s LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %%s" % self.owner,
            (OWNER_PASSWORD,))
        sql(self.stack, 'postgres', 'CREATE DATABASE %s OWNER %s' % (self.db, self.owner))
        shutil.copytree(os.path.join(REPO, 'inventories', 'minimal'), self.inventory)
        repository = _app_repository(self.root)
        # An empty file stands in for Prisma's query and schema engines, which `prisma generate` wants to download
        # (this machine reaches no binaries.prisma.sh); the client generated (engineType client) needs neither.
        engine_stub = os.path.join(self.root, 'prisma-engine-stub')
        open(engine_stub, 'w').close()
        url = 'http://127.0.0.1:%d' % self.port
        host_vars = {
            # This machine is the app host.
            'ansible_connection': 'local',
            'ansible_python_interpreter': sys.executable,
            'runbook_environment': self.name,
            'runbook_database': {'host': self.stack['RUNBOOK_PG_HOST'], 'port': int(self.stack['RUNBOOK_PG_PORT']),
                                 'user': self.owner, 'password': OWNER_PASSWORD, 'dbname': self.db},
            'backend_deploy_to': self.deploy_to,
            'backend_git_repo': repository,
            # `npm ci` offline: the repository's node_modules (express, Prisma) linked into the release.
            'backend_build_commands': ['ln -s %s node_modules' % os.path.join(REPO, 'node_modules'),
                                       'node_modules/.bin/prisma generate'],
            'backend_build_environment': {'PRISMA_QUERY_ENGINE_LIBRARY': engine_stub,
                                          'PRISMA_SCHEMA_ENGINE_BINARY': engine_stub},
            'backend_env': {'PORT': str(self.port),
                            'DATABASE_URL': '{{ runbook_database | runbook.deploy.pg_url }}'},
            'backend_pm2_home': self.pm2_home,
            'backend_pm2_executable': PM2,
            'backend_pm2_stable_for': 1,
            'backend_pm2_timeout': 20,
            'backend_ready_url': url + '/healthz',
            # The migrating host has no Prisma engine binaries here either: the module's own engine applies them.
            'migrate_prisma_engine': 'native',
            'backup_dest': os.path.join(self.root, 'backups'),
            'smoke_base_url': url,
            'smoke_wait_timeout': 15,
            'watch_health_url': url + '/healthz',
            'watch_duration': 2,
            'watch_interval': 1,
            'deployment_history_dir': os.path.join(self.root, 'history'),
            'deployment_lock_path': os.path.join(self.root, 'deploy.lock'),
            'preflight_disk_paths': [self.root],
            'preflight_disk_min_free_percent': 5,
            # What this app adds over the minimal inventory: its flags table has a percentage column.
            'flags_percentage_column': 'rollout_percentage',
            'flags_rollout_pause': 0,
        }
        os.makedirs(os.path.join(self.inventory, 'host_vars'))
        with open(os.path.join(self.inventory, 'host_vars', 'app1.example.internal.yml'), 'w') as handle:
            handle.write('---\n' + yaml.safe_dump(host_vars, sort_keys=False))

    def play(self, playbook, **extra):
        command = [PLAYBOOK, '-i', self.inventory, os.path.join(REPO, 'playbooks', playbook)]
        if extra:
            command += ['-e', json.dumps(extra)]
        env = dict(os.environ, ANSIBLE_FORCE_COLOR='0', ANSIBLE_NOCOLOR='1')
        env.pop('PM2_HOME', None)
        proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=600)
        output = proc.stdout + proc.stderr
        print('==== %s %s: rc=%s\n%s' % (playbook, json.dumps(extra), proc.returncode, output[-8000:]))
        return proc.returncode, output

    def current(self):
        return os.path.basename(os.readlink(os.path.join(self.deploy_to, 'current')))

    def get(self, path):
        try:
            with urllib.request.urlopen('http://127.0.0.1:%d%s' % (self.port, path), timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def as_owner(self, statement):
        return sql(dict(self.stack, RUNBOOK_PG_USER=self.owner, RUNBOOK_PG_PASSWORD=OWNER_PASSWORD), self.db,
                   statement)

    def history(self):
        path = os.path.join(self.root, 'history', self.name + '.jsonl')
        with open(path) as handle:
            return [(e['kind'], e['version'], e['status']) for e in map(json.loads, handle) if e]

    def scripts(self):
        """The script path of each notes-api process PM2 runs."""
        proc = subprocess.run([PM2, 'jlist'], env=dict(os.environ, PM2_HOME=self.pm2_home), capture_output=True,
                              text=True, check=True)
        return sorted({p['pm2_env']['pm_exec_path'] for p in json.loads(proc.stdout) if p['name'] == 'notes-api'})

    def pids(self):
        """The pids of every process PM2 runs."""
        proc = subprocess.run([PM2, 'jlist'], env=dict(os.environ, PM2_HOME=self.pm2_home), capture_output=True,
                              text=True, check=True)
        return sorted(p['pid'] for p in json.loads(proc.stdout))

    def clean(self):
        subprocess.run([PM2, 'kill'], env=dict(os.environ, PM2_HOME=self.pm2_home), capture_output=True, check=False)
        sql(self.stack, 'postgres', 'DROP DATABASE IF EXISTS %s WITH (FORCE)' % self.db)
        sql(self.stack, 'postgres', 'DROP ROLE IF EXISTS %s' % self.owner)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope='class')
def notes(stack):
    # A short root: PM2's socket paths must stay under the 108 bytes a unix socket path may have.
    env = NotesEnv(stack, tempfile.mkdtemp(prefix='own-', dir='/tmp'), 'notes_' + uuid.uuid4().hex[:6])
    try:
        env.prepare()
        yield env
    finally:
        env.clean()


class TestATeamsOwnAppFromTheMinimalInventory(object):
    def test_the_minimal_inventory_is_small_and_the_first_deployment_onto_an_empty_database_succeeds(self, notes):
        lines = sum(len(open(os.path.join(d, f)).read().splitlines())
                    for d, dummy, files in os.walk(os.path.join(REPO, 'inventories', 'minimal')) for f in files)
        assert lines <= 45, 'inventories/minimal has %d lines' % lines
        assert notes.as_owner("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]

        # An automatic rollback that restores the backup needs CREATEDB (the copy is built beside the database and
        # swapped in): found in the Check phase, before anything changed, not at 3 a.m. in the middle of a rollback.
        rc, output = notes.play('deploy_staging.yml', runbook_version='v1', runbook_rollback_database='restore')
        assert rc != 0, output[-6000:]
        assert 'database: a restore rollback' in output and 'needs the CREATEDB privilege (ALTER ROLE "%s" CREATEDB)' \
            % notes.owner in output, output[-6000:]
        assert not os.path.exists(os.path.join(notes.deploy_to, 'releases'))
        assert not os.path.exists(os.path.join(notes.root, 'backups'))
        # What the DBA grants; still no superuser.
        sql(notes.stack, 'postgres', 'ALTER ROLE %s CREATEDB' % notes.owner)

        rc, output = notes.play('deploy_staging.yml', runbook_version='v1')
        assert rc == 0, output[-6000:]
        assert notes.current() == 'v1'
        assert notes.get('/healthz') == (204, '')
        # Prisma Client at run time, through the DATABASE_URL built from the owner's awkward password.
        assert notes.get('/notes')[0] == 200
        assert notes.get('/notes')[1] == '[]'
        # The apps run through current (the ecosystem's cwd), not a release's own directory.
        assert notes.scripts() == [os.path.join(notes.deploy_to, 'current', 'src', 'index.js')]
        # The backup of the empty database, taken before the first migration, is a valid one.
        manifests = [os.path.join(notes.root, 'backups', name) for name in os.listdir(os.path.join(notes.root, 'backups'))
                     if name.endswith('.json')]
        assert len(manifests) == 1, manifests
        with open(manifests[0]) as handle:
            manifest = json.load(handle)
        assert manifest['db'] == notes.db and manifest['verification'].get('empty_database') is True, manifest
        assert notes.history()[-1] == ('deploy', 'v1', 'succeeded')
        # The password reached neither the output nor the release's files other than the 0600 .env.
        assert OWNER_PASSWORD not in output and 'n%2Fotes' not in output
        env_file = os.path.join(notes.deploy_to, 'shared', '.env')
        assert oct(os.stat(env_file).st_mode & 0o777) == '0o600'

    def test_a_version_adding_a_column_and_a_flag_carries_its_own_settings(self, notes):
        assert notes.history()[-1] == ('deploy', 'v1', 'succeeded'), 'continues from the first deployment'
        urllib.request.urlopen(urllib.request.Request(
            'http://127.0.0.1:%d/notes' % notes.port, data=b'{"title": "written on v1"}',
            headers={'Content-Type': 'application/json'}), timeout=5).close()

        rc, output = notes.play('deploy_staging.yml', runbook_version='v2')
        assert rc == 0, output[-6000:]
        assert notes.current() == 'v2'
        notes_now = json.loads(notes.get('/notes')[1])
        assert [(n['title'], n['pinned']) for n in notes_now] == [('written on v1', False)], notes_now
        # deploy/runbook.yml of v2 named the rollout; its steps ran to 100%.
        assert notes.as_owner("SELECT enabled, rollout_percentage FROM feature_flags WHERE flag_name = 'pinned_notes'") \
            == [(True, 100)]
        assert 'pinned_notes' in output

    def test_a_restore_rollback_as_the_owner_goes_back_to_v1_and_its_schema(self, notes):
        assert notes.history()[-1] == ('deploy', 'v2', 'succeeded'), 'continues from v2'
        rc, output = notes.play('rollback.yml', rollback_database='restore')
        assert rc == 0, output[-6000:]
        assert notes.current() == 'v1'
        assert notes.get('/healthz') == (204, '')
        columns = notes.as_owner("SELECT column_name FROM information_schema.columns WHERE table_name = 'notes' "
                                 "ORDER BY ordinal_position")
        assert [c[0] for c in columns] == ['id', 'title', 'created'], 'the pre-v2 backup was restored'
        assert notes.as_owner("SELECT to_regclass('public.feature_flags')") == [(None,)]
        assert json.loads(notes.get('/notes')[1])[0]['title'] == 'written on v1'
        assert OWNER_PASSWORD not in output


@pytest.fixture(scope='class')
def hand_installed(stack):
    """The notes app v1 as a team deployed it by hand before runbook.deploy: a git checkout at the tag, its
    dependencies and Prisma Client in it, a .env written by hand, its migrations applied, `pm2 start` in it."""
    env = NotesEnv(stack, tempfile.mkdtemp(prefix='adopt-', dir='/tmp'), 'notes_' + uuid.uuid4().hex[:6])
    try:
        env.prepare()
        sql(env.stack, 'postgres', 'ALTER ROLE %s CREATEDB' % env.owner)
        env.install = os.path.join(env.root, 'hand', 'notes')
        repository = os.path.join(env.root, 'notes.git')
        _git(env.root, 'clone', '-q', '--branch', 'v1', repository, env.install)
        os.symlink(os.path.join(REPO, 'node_modules'), os.path.join(env.install, 'node_modules'))
        engine_stub = os.path.join(env.root, 'prisma-engine-stub')
        subprocess.run([os.path.join(REPO, 'node_modules', '.bin', 'prisma'), 'generate'], cwd=env.install, check=True,
                       capture_output=True, env=dict(os.environ, PRISMA_QUERY_ENGINE_LIBRARY=engine_stub,
                                                     PRISMA_SCHEMA_ENGINE_BINARY=engine_stub))
        url = 'postgresql://%s:%s@%s:%s/%s' % (
            env.owner, urllib.parse.quote(OWNER_PASSWORD, safe=''), stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'],
            env.db)
        with open(os.path.join(env.install, '.env'), 'w') as handle:
            handle.write('PORT=%d\nDATABASE_URL=%s\n' % (env.port, url))
        # What the install keeps beside its code: a logs directory, and uploads linked to a data disk.
        os.makedirs(os.path.join(env.install, 'logs'))
        with open(os.path.join(env.install, 'logs', 'app.log'), 'w') as handle:
            handle.write('written by the install\n')
        os.makedirs(os.path.join(env.root, 'data', 'uploads'))
        open(os.path.join(env.root, 'data', 'uploads', 'photo.jpg'), 'w').close()
        os.symlink(os.path.join(env.root, 'data', 'uploads'), os.path.join(env.install, 'uploads'))
        host_vars_file = os.path.join(env.inventory, 'host_vars', 'app1.example.internal.yml')
        with open(host_vars_file) as handle:
            host_vars = yaml.safe_load(handle)
        host_vars['backend_shared_dirs'] = ['logs', 'uploads']
        with open(host_vars_file, 'w') as handle:
            handle.write('---\n' + yaml.safe_dump(host_vars, sort_keys=False))
        os.chmod(os.path.join(env.install, '.env'), 0o600)
        # `npx prisma migrate deploy`, done by the module's own engine (this machine has no Prisma engine binaries);
        # the password reaches it as libpq's PGPASSWORD, not on the command line.
        migrated = subprocess.run(
            [os.path.join(REPO, '.venv', 'bin', 'ansible'), 'localhost', '-m', 'runbook.deploy.prisma_migrate', '-a',
             'engine=native project_path=%s login_host=%s login_port=%s login_user=%s db=%s'
             % (env.install, stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], env.owner, env.db)],
            env=dict(os.environ, PGPASSWORD=OWNER_PASSWORD), capture_output=True, text=True, check=False)
        assert migrated.returncode == 0 and '20261201000000_create_notes' in migrated.stdout, migrated.stdout[-3000:]
        subprocess.run([PM2, 'start', 'src/index.js', '--name', 'notes-api', '-i', '2',
                        '--node-args=--env-file=' + os.path.join(env.install, '.env')],
                       cwd=env.install, check=True, capture_output=True, env=dict(os.environ, PM2_HOME=env.pm2_home))
        for dummy in range(100):
            try:
                if env.get('/healthz')[0] == 204:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert env.get('/healthz') == (204, ''), 'the hand-started install does not answer'
        yield env
    finally:
        env.clean()


class TestAdoptingAnInstallDeployedByHand(object):
    def test_the_check_refuses_a_wrong_version_and_changes_nothing(self, hand_installed):
        env = hand_installed
        # Both problems in one run: the wrong version, and an app name PM2 does not run (another PM2_HOME, another
        # user, a typo), which is not taken for "nothing to move".
        rc, output = env.play('adopt.yml', runbook_version='v2', backend_adopt_from=env.install,
                              backend_pm2_apps=['notes-api', 'notes-worker'])
        assert rc != 0
        assert '(1) no process of notes-worker runs in the PM2 of %s' % env.pm2_home in output, output[-4000:]
        assert '(2) the install is a checkout of tag v1, not v2 (runbook_version)' in output, output[-4000:]
        assert not os.path.exists(env.deploy_to)
        assert env.scripts() == [os.path.join(env.install, 'src', 'index.js')]

    def test_the_install_becomes_release_v1_and_its_apps_move_under_current_without_a_failed_request(
            self, hand_installed):
        env = hand_installed
        assert env.scripts() == [os.path.join(env.install, 'src', 'index.js')], 'continues from the hand start'
        with RequestLoop(lambda: env.get('/healthz')[0], 0.1) as load:
            rc, output = env.play('adopt.yml', runbook_version='v1', backend_adopt_from=env.install)
        assert rc == 0, output[-6000:]
        assert load.failures == [] and load.answers > 20, (load.answers, load.failures[:5])
        assert env.current() == 'v1'
        assert env.scripts() == [os.path.join(env.deploy_to, 'current', 'src', 'index.js')]
        with open(os.path.join(env.deploy_to, 'releases', 'v1', 'RELEASE.json')) as handle:
            record = json.load(handle)
        assert record['version'] == 'v1' and record['adopted'] is True and record['source'] == env.install
        assert record['git_sha'], record
        # The release runs as it was built by hand (its Prisma Client), with .env now the shared one.
        assert os.path.isdir(os.path.join(env.deploy_to, 'releases', 'v1', 'generated', 'client'))
        assert os.readlink(os.path.join(env.deploy_to, 'releases', 'v1', '.env')) == \
            os.path.join(env.deploy_to, 'shared', '.env')
        assert env.get('/notes') == (200, '[]')
        # The install's own directories are shared now: its logs copied, its uploads link moved as the link it is.
        shared = os.path.join(env.deploy_to, 'shared')
        assert open(os.path.join(shared, 'logs', 'app.log')).read() == 'written by the install\n'
        assert os.readlink(os.path.join(shared, 'uploads')) == os.path.join(env.root, 'data', 'uploads')
        assert os.path.exists(os.path.join(env.deploy_to, 'current', 'uploads', 'photo.jpg'))
        assert env.history()[-1] == ('adopt', 'v1', 'succeeded')
        assert os.path.isfile(os.path.join(env.install, 'src', 'index.js')), 'the install is left as it was'
        assert OWNER_PASSWORD not in output

        pids = env.pids()
        rc, output = env.play('adopt.yml', runbook_version='v1', backend_adopt_from=env.install)
        assert rc == 0, output[-4000:]
        assert 'changed=0' in output.split('PLAY RECAP')[-1].replace(' ', ''), output[-3000:]
        assert env.pids() == pids

    def test_a_broken_version_after_it_rolls_back_by_itself_to_the_adopted_release(self, hand_installed):
        env = hand_installed
        assert env.history()[-1] == ('adopt', 'v1', 'succeeded'), 'continues from the adoption'
        rc, output = env.play('deploy_staging.yml', runbook_version='v3')
        assert rc != 0, output[-6000:]
        assert env.current() == 'v1'
        assert env.get('/healthz') == (204, '')
        assert env.scripts() == [os.path.join(env.deploy_to, 'current', 'src', 'index.js')]
        assert os.path.exists(os.path.join(env.deploy_to, 'releases', 'v3', 'BAD'))
        assert env.history()[-1] == ('deploy', 'v3', 'rolled_back'), env.history()
        assert 'Rolled back: v1 runs again' in output
        # The readiness check's failure is what the run says, with the app's own answer (its error log is empty).
        assert 'did not answer 2xx within 20s: HTTP 500, answered: v3 cannot read its settings' in output, \
            output[-6000:]
