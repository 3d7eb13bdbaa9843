"""runbook.deploy.pg_backup hardening (issue 15 items 1, 2, 3, 5, 7 and the jobs bound of 10), against the real
PostgreSQL and moto S3 of the local stack."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import boto3
import psycopg2
import pytest

from helpers import REPO, assert_clear_failure, connect, free_port, sql

MODULE = 'runbook.deploy.pg_backup'
COLLECTIONS = os.environ.get('ANSIBLE_COLLECTIONS_PATH', os.path.join(REPO, '.cache', 'ansible', 'collections'))


@pytest.fixture
def backup(run_module, pg_conn_args, tmp_path):
    dest = str(tmp_path / 'backups')

    def call(check=False, **args):
        merged = dict(pg_conn_args, dest=dest)
        merged.update(args)
        return run_module(MODULE, check=check, **merged)

    call.dest = dest
    return call


@pytest.fixture
def quoted_dbs(stack):
    """Create databases with any name (quoted); drop them, and anything derived from them, afterwards."""
    created = []

    def factory(name, rows=None):
        sql(stack, 'postgres', 'CREATE DATABASE "%s"' % name.replace('"', '""'))
        created.append(name)
        if rows is not None:
            sql(stack, name, """CREATE TABLE public.users (id serial PRIMARY KEY, email text);
                                INSERT INTO public.users (email) SELECT 'u' || g FROM generate_series(1, %d) g""" % rows)
        return name

    yield factory
    for name in created:
        for (derived,) in sql(stack, 'postgres', 'SELECT datname FROM pg_database WHERE datname = %s OR '
                              'starts_with(datname, %s)', (name, name + '__')):
            sql(stack, 'postgres', 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % derived.replace('"', '""'))


def user_count(stack, dbname):
    return sql(stack, dbname, 'SELECT count(*) FROM public.users')[0][0]


def tables_of(stack, dbname):
    return [r[0] for r in sql(stack, dbname, "SELECT relname FROM pg_class WHERE relkind = 'r' "
                                             "AND relnamespace = 'public'::regnamespace ORDER BY 1")]


def start_module(tmp_path, args, env=None):
    """Run pg_backup as its own process (no Ansible around it), so a test can run two at once or kill one."""
    path = tmp_path / ('args-%s.json' % uuid.uuid4().hex[:8])
    path.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': args}))
    os.chmod(path, 0o600)
    child_env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    child_env.update(env or {})
    return subprocess.Popen([sys.executable, '-m', 'ansible_collections.runbook.deploy.plugins.modules.pg_backup',
                             str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env, cwd=str(tmp_path))


def finish_module(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    try:
        return json.loads(out.decode())
    except ValueError:
        raise AssertionError('module printed no JSON (rc %s): %s %s' % (proc.returncode, out[-2000:], err[-2000:]))


def wait_for(predicate, what, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError('timed out after %ss waiting for %s' % (timeout, what))


def children_dumping(parent, dbname):
    """pids of pg_dump processes started by parent for dbname (pg_backup passes it in PGDATABASE)."""
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % pid) as handle:
                ppid = int(handle.read().rsplit(')', 1)[1].split()[1])
            with open('/proc/%s/cmdline' % pid, 'rb') as handle:
                cmdline = handle.read()
            with open('/proc/%s/environ' % pid, 'rb') as handle:
                environ = handle.read().split(b'\0')
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b'pg_dump' in cmdline and ('PGDATABASE=%s' % dbname).encode() in environ:
            found.append(int(pid))
    return found


class FakePostgres(threading.Thread):
    """A listener on 127.0.0.1 that speaks just enough of the PostgreSQL protocol to ask a client for its password
    in clear text, and records every connection and password it gets."""

    def __init__(self):
        super().__init__(daemon=True)
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(('127.0.0.1', self.port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.connections = 0
        self.received = []
        self.done = threading.Event()

    @staticmethod
    def _read(conn, count):
        data = b''
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                raise OSError('closed')
            data += chunk
        return data

    def _serve(self, conn):
        conn.settimeout(5)
        while True:
            length, code = struct.unpack('!ii', self._read(conn, 8))
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not here
                conn.sendall(b'N')
                continue
            self._read(conn, length - 8)  # the startup packet: user, database
            break
        conn.sendall(b'R' + struct.pack('!ii', 8, 3))  # AuthenticationCleartextPassword
        kind = self._read(conn, 1)
        length = struct.unpack('!i', self._read(conn, 4))[0]
        self.received.append(kind + self._read(conn, length - 4))

    def run(self):
        while not self.done.is_set():
            try:
                conn, dummy = self.sock.accept()
            except socket.timeout:
                continue
            self.connections += 1
            try:
                self._serve(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()
        self.sock.close()


# -- item 1: a database name is a name, never a connection string --------------------------

def test_restore_target_named_like_a_conninfo_restores_into_that_database(backup, make_db, quoted_dbs, stack):
    """Before: --dbname=dbname=<other> made pg_restore restore into <other> and the task reported success."""
    source = make_db(rows=25)
    taken = backup(db=source, label='src')['backup']
    other = make_db(rows=None)
    target = quoted_dbs('dbname=%s' % other)
    result = backup(state='restored', db=target, src=taken['path'])
    assert result.get('changed') is True, result
    assert result['restore']['target_db'] == target
    assert tables_of(stack, other) == [], 'the restore went into %s, the database the name pointed at' % other
    assert user_count(stack, target) == 25


def test_restore_target_named_like_a_host_never_connects_elsewhere(backup, make_db, quoted_dbs, stack):
    """Before: a target 'host=127.0.0.1 port=N dbname=x' made pg_restore connect to that port and send the password
    (the passfile line matched any host)."""
    source = make_db(rows=15)
    taken = backup(db=source, label='src')['backup']
    with FakePostgres() as fake:
        target = 'host=127.0.0.1 port=%d dbname=x%s' % (fake.port, uuid.uuid4().hex[:6])
        quoted_dbs(target)
        sql(stack, 'postgres', 'DROP DATABASE "%s"' % target)  # the restore creates it (swap into a new database)
        result = backup(state='restored', db=target, src=taken['path'])
        # Into an existing (empty) database of such a name: restored in place.
        existing = quoted_dbs('host=127.0.0.1 port=%d dbname=y%s' % (fake.port, uuid.uuid4().hex[:6]))
        plain = backup(state='restored', db=existing, src=taken['path'])
    password = stack['RUNBOOK_PG_PASSWORD'].encode()
    assert not any(password in r for r in fake.received), 'the password was sent to 127.0.0.1:%d' % fake.port
    assert fake.connections == 0, 'a client connected to the host named in a database name'
    assert result.get('changed') is True, result
    assert plain.get('changed') is True, plain
    assert user_count(stack, target) == 15 and user_count(stack, existing) == 15
    assert password.decode() not in json.dumps([result, plain])


def test_backup_of_a_database_named_like_a_conninfo(backup, make_db, quoted_dbs, stack):
    other = make_db(rows=40)
    target = quoted_dbs('dbname=%s' % other, rows=3)
    result = backup(db=target, label='odd', verify='restore')
    assert result.get('changed') is True, result
    assert result['backup']['db'] == target
    assert result['backup']['verification']['row_counts'] == {'public.users': 3}


# -- item 2: backups of different databases never share a name ----------------------------

def test_backups_of_names_that_map_alike_do_not_collide(backup, quoted_dbs, stack, s3, bucket):
    """Before: 'c.<id>' and 'c_<id>' shared a file prefix; keep=1 for one deleted the other's only backup and
    restoring source_db='c.<id>' restored 'c_<id>'s data."""
    suffix = uuid.uuid4().hex[:8]
    dotted = quoted_dbs('c.%s' % suffix, rows=10)
    under = quoted_dbs('c_%s' % suffix, rows=20)
    s3_opts = dict(s3_bucket=bucket, s3_prefix='prod/pg', s3_endpoint_url=stack['RUNBOOK_S3_ENDPOINT_URL'],
                   s3_region='us-east-1')
    first = backup(db=dotted, label='nightly', keep=1, **s3_opts)
    assert first.get('changed') is True, first
    second = backup(db=under, label='nightly', keep=1, **s3_opts)
    assert second.get('changed') is True, second
    assert second['removed'] == [], 'retention of %s removed backups of another database' % under
    assert first['backup']['name'] != second['backup']['name']
    assert os.path.exists(first['backup']['path']) and os.path.exists(first['backup']['path'] + '.json')
    keys = [o['Key'] for o in s3.list_objects_v2(Bucket=bucket).get('Contents', [])]
    assert 'prod/pg/%s' % first['backup']['name'] in keys, keys
    # Lookup by database: locally, and from S3 into a fresh dest.
    restored = quoted_dbs('r.%s' % suffix)
    result = backup(state='restored', db=restored, source_db=dotted, label='nightly', clean=True)
    assert result.get('changed') is True, result
    assert user_count(stack, restored) == 10
    from_s3 = quoted_dbs('s.%s' % suffix)
    result = backup(state='restored', db=from_s3, source_db=dotted, label='nightly', dest=backup.dest + '-fresh',
                    **s3_opts)
    assert result.get('changed') is True, result
    assert user_count(stack, from_s3) == 10


@pytest.fixture
def s3(stack):
    return boto3.client('s3', endpoint_url=stack['RUNBOOK_S3_ENDPOINT_URL'], region_name='us-east-1')


@pytest.fixture
def bucket(s3):
    name = 'hardening-%s' % uuid.uuid4().hex[:10]
    s3.create_bucket(Bucket=name)
    yield name
    keys = [o['Key'] for o in s3.list_objects_v2(Bucket=name).get('Contents', [])]
    if keys:
        s3.delete_objects(Bucket=name, Delete={'Objects': [{'Key': k} for k in keys]})
    for upload in s3.list_multipart_uploads(Bucket=name).get('Uploads', []):
        s3.abort_multipart_upload(Bucket=name, Key=upload['Key'], UploadId=upload['UploadId'])
    s3.delete_bucket(Bucket=name)


def test_old_style_backup_name_is_still_restored_by_its_manifest(backup, quoted_dbs, stack):
    """A backup written before names carried a hash (c_<id>.label... holding c.<id>) is found by its manifest,
    never counted as a backup of c_<id>, and never overwritten by one: before, a backup of c_<id> taken in the
    same second as an old-style one took its name and replaced it (CI saw the restore find nothing)."""
    suffix = uuid.uuid4().hex[:8]
    dotted = quoted_dbs('c.%s' % suffix, rows=7)
    under = quoted_dbs('c_%s' % suffix, rows=9)
    taken = backup(db=dotted, label='old')['backup']
    stamp = taken['name'].split('.old.')[1].split('.')[0]
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    # Old-style copies for this second and the next 30: the backup of c_<id> below is taken in one of them.
    legacies = []
    for ahead in range(31):
        when = (now + datetime.timedelta(seconds=ahead)).strftime('%Y%m%dT%H%M%SZ')
        legacy = os.path.join(backup.dest, 'c_%s.old.%s.dump' % (suffix, when))
        for ext in ('', '.json'):
            shutil.copyfile(taken['path'] + ext, legacy + ext)
        with open(legacy + '.sha256', 'w') as handle:
            handle.write('%s  %s\n' % (taken['sha256'], os.path.basename(legacy)))
        legacies.append(legacy)
    for ext in ('', '.sha256', '.json'):
        os.remove(taken['path'] + ext)
    assert stamp <= now.strftime('%Y%m%dT%H%M%SZ')
    mine = backup(db=under, label='old', keep=1)
    assert mine.get('changed') is True and mine['removed'] == [], mine
    assert mine['backup']['path'] not in legacies, 'the backup of c_%s took an old-style backup of c.%s\'s name' % (
        suffix, suffix)
    for legacy in legacies:
        with open(legacy + '.json') as handle:
            assert json.load(handle)['db'] == 'c.%s' % suffix, '%s was overwritten' % legacy
    target = quoted_dbs('t.%s' % suffix)
    result = backup(state='restored', db=target, source_db=dotted, label='old')
    assert result.get('changed') is True, result
    assert result['restore']['source'] == legacies[-1]
    assert user_count(stack, target) == 7


# -- item 3: only complete, verified backups count, and a concurrent run's backup is kept ---------

def inodes_used(path):
    stats = os.statvfs(path)
    return stats.f_files - stats.f_ffree


def test_sidecar_write_failure_leaves_no_backup_name_and_retention_keeps_the_verified_one(backup, make_db, tmp_path):
    """Before: with the disk full after the dump, writing the .sha256 sidecar failed with a traceback and left the
    archive under its final name; a later keep=2 counted it and deleted the verified backup."""
    db = make_db(rows=50)
    mount = tmp_path / 'full'
    mount.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'tmpfs', str(mount)], check=True)
    try:
        verified = backup(db=db, dest=str(mount), label='nightly', keep=2)
        assert verified.get('changed') is True, verified
        # Room for exactly one more file (the dump), none for its sidecars: the disk fills after the dump.
        subprocess.run(['mount', '-o', 'remount,nr_inodes=%d' % (inodes_used(str(mount)) + 1), str(mount)], check=True)
        failed = backup(db=db, dest=str(mount), label='nightly', keep=2)
        assert_clear_failure(failed, 'No space left on device', str(mount))
        assert 'unexpectedly' not in failed['msg'], failed['msg']
        names = sorted(os.listdir(mount))
        assert names == sorted(['.pg_backup.lock', verified['backup']['name'], verified['backup']['name'] + '.sha256',
                                verified['backup']['name'] + '.json']), names
        subprocess.run(['mount', '-o', 'remount,nr_inodes=1000', str(mount)], check=True)
        later = backup(db=db, dest=str(mount), label='nightly', keep=2)
        assert later.get('changed') is True, later
        assert later['removed'] == [], later['removed']
        assert os.path.exists(verified['backup']['path'])
    finally:
        subprocess.run(['umount', str(mount)], check=True)


def test_incomplete_backup_under_a_final_name_does_not_count_toward_keep(backup, make_db):
    """A file under a backup name without sidecars (left by an older version) neither counts nor is reported as
    kept: keep=1 still keeps the newest verified backup."""
    db = make_db(rows=5)
    verified = backup(db=db, label='nightly')['backup']
    stray = verified['path'].replace(verified['name'].split('.')[2], '20991231T000000Z')
    with open(stray, 'wb') as handle:
        handle.write(b'PGDMP truncated')
    later = backup(db=db, label='nightly', keep=2)
    assert later.get('changed') is True, later
    assert verified['path'] not in later['removed'], later['removed']
    assert os.path.exists(verified['path'])


def test_concurrent_runs_never_delete_what_the_other_reported(pg_conn_args, make_db, stack, tmp_path):
    """Before: run B, started while run A was dumping, pruned with keep=1 after A had reported its backup, and
    deleted it."""
    db = make_db(rows=30)
    dest = str(tmp_path / 'backups')
    args = dict(pg_conn_args, db=db, dest=dest, label='deploy', keep=1)
    blocker = connect(stack, db)
    try:
        blocker.autocommit = False
        with blocker.cursor() as cursor:
            cursor.execute('LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE')
        first = start_module(tmp_path, args)
        wait_for(lambda: children_dumping(first.pid, db), 'run A to start pg_dump (blocked by the table lock)')
        second = start_module(tmp_path, args)

        def waits_for_lock():
            try:
                return any(os.readlink('/proc/%d/fd/%s' % (second.pid, fd)).endswith('.pg_backup.lock')
                           for fd in os.listdir('/proc/%d/fd' % second.pid))
            except OSError:
                return False
        wait_for(waits_for_lock, 'run B to wait for the dest lock')
    finally:
        blocker.rollback()
        blocker.close()
    reported = finish_module(first)
    assert reported.get('changed') is True, reported
    later = finish_module(second)
    assert later.get('changed') is True, later
    assert reported['backup']['path'] not in later['removed']
    assert os.path.exists(reported['backup']['path']), 'run B deleted the backup run A had just reported'
    # A third run, started after both, applies keep=1 as usual.
    third = finish_module(start_module(tmp_path, args))
    assert sorted(third['removed']) == sorted([reported['backup']['path'], later['backup']['path']])


# -- item 5: clean restore as a least-privilege owner --------------------------------------

@pytest.fixture
def owner_role(stack):
    """A LOGIN role with CREATEDB only (no superuser, no tablespace grant), with a password; databases it owns are
    dropped with it."""
    name = 'owner_%s' % uuid.uuid4().hex[:8]
    password = uuid.uuid4().hex
    sql(stack, 'postgres', "CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s'" % (name, password))
    role = dict(name=name, password=password)
    yield role
    for (db,) in sql(stack, 'postgres', 'SELECT datname FROM pg_database WHERE datdba = %s::regrole', (name,)):
        sql(stack, 'postgres', 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % db)
    sql(stack, 'postgres', 'DROP OWNED BY %s; DROP ROLE %s' % (name, name))


def as_role(stack, role):
    return dict(login_host=stack['RUNBOOK_PG_HOST'], login_port=int(stack['RUNBOOK_PG_PORT']),
                login_user=role['name'], login_password=role['password'])


def owned_db(stack, role, rows):
    name = 'owned_%s' % uuid.uuid4().hex[:8]
    sql(stack, 'postgres', 'CREATE DATABASE %s OWNER %s' % (name, role['name']))
    conn = psycopg2.connect(host=stack['RUNBOOK_PG_HOST'], port=int(stack['RUNBOOK_PG_PORT']), user=role['name'],
                            password=role['password'], dbname=name)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute("""CREATE TABLE public.users (id serial PRIMARY KEY, email text);
                              INSERT INTO public.users (email) SELECT 'u' || g FROM generate_series(1, %d) g""" % rows)
    finally:
        conn.close()
    return name


def test_clean_restore_as_a_non_superuser_owner_with_createdb(backup, stack, owner_role):
    """Before: CREATE DATABASE ... TABLESPACE pg_default was refused without a tablespace grant."""
    login = as_role(stack, owner_role)
    db = owned_db(stack, owner_role, rows=12)
    taken = backup(db=db, label='pre_migration', **login)
    assert taken.get('changed') is True, taken
    sql(stack, db, 'DELETE FROM public.users WHERE id > 2')
    result = backup(state='restored', db=db, src=taken['backup']['path'], clean=True, **login)
    assert result.get('changed') is True, result
    assert result['restore']['method'] == 'swap'
    assert user_count(stack, db) == 12
    assert sql(stack, 'postgres', 'SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s',
               (db,)) == [(owner_role['name'],)]
    assert sql(stack, 'postgres', "SELECT count(*) FROM pg_database WHERE starts_with(datname, %s)",
               (db + '__',)) == [(0,)]


def test_clean_restore_without_createdb_fails_before_changing_anything(backup, stack, owner_role):
    login = as_role(stack, owner_role)
    db = owned_db(stack, owner_role, rows=4)
    taken = backup(db=db, label='pre_migration', **login)['backup']
    sql(stack, 'postgres', 'ALTER ROLE %s NOCREATEDB' % owner_role['name'])
    before = sorted(os.listdir(backup.dest))
    result = backup(state='restored', db=db, src=taken['path'], clean=True, **login)
    assert_clear_failure(result, 'CREATEDB', owner_role['name'], 'clean')
    assert sorted(os.listdir(backup.dest)) == before, 'a safety backup was taken before the privilege check'
    assert sql(stack, 'postgres', "SELECT count(*) FROM pg_database WHERE starts_with(datname, %s)",
               (db + '__',)) == [(0,)]


# -- item 7: a killed module leaves no password on disk ------------------------------------

def files_holding(root, secret):
    hits = []
    for folder, dummy_dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                with open(path, 'rb') as handle:
                    if secret in handle.read():
                        hits.append(path)
            except OSError:
                pass
    return hits


def test_sigkill_mid_dump_leaves_no_password_on_disk(pg_conn_args, make_db, stack, tmp_path):
    """Before: the passfile (*:*:*:*:<password>) stayed in $TMPDIR/runbook-deploy-* when the module was killed."""
    db = make_db(rows=10)
    scratch = tmp_path / 'tmp'
    scratch.mkdir()
    dest = tmp_path / 'backups'
    blocker = connect(stack, db)
    try:
        blocker.autocommit = False
        with blocker.cursor() as cursor:
            cursor.execute('LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE')
        proc = start_module(tmp_path, dict(pg_conn_args, db=db, dest=str(dest)), env=dict(TMPDIR=str(scratch)))
        dumps = wait_for(lambda: children_dumping(proc.pid, db), 'pg_dump to start (blocked by the table lock)')
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        for path in (tmp_path / n for n in os.listdir(tmp_path) if n.startswith('args-')):
            path.unlink()  # the test's own copy of the module arguments
    finally:
        blocker.rollback()
        blocker.close()
    wait_for(lambda: not any(os.path.exists('/proc/%d' % pid) for pid in dumps), 'pg_dump to exit')
    password = stack['RUNBOOK_PG_PASSWORD'].encode()
    assert files_holding(str(scratch), password) == []
    assert files_holding(str(tmp_path), password) == []


# -- item 10 (part): jobs is bounded ---------------------------------------------------------

def test_jobs_are_bounded_by_the_free_connection_slots(backup, stack, owner_role):
    """Before: jobs=40 for a role allowed 4 connections failed in pg_dump (too many connections); jobs=100000 held
    the server's slots. Now jobs is reduced to what the server (and the role and database limits) leave free,
    with a warning, and absurd values fail at once."""
    sql(stack, 'postgres', 'ALTER ROLE %s CONNECTION LIMIT 4' % owner_role['name'])
    login = as_role(stack, owner_role)
    db = owned_db(stack, owner_role, rows=20)
    result = backup(db=db, format='directory', jobs=40, **login)
    assert result.get('changed') is True, result
    assert any('jobs' in w and '40' in w for w in result.get('warnings', [])), result.get('warnings')
    used = [c for c in result['executed_commands'] if 'pg_dump' in c and '--format=directory' in c]
    assert used and all('--jobs=40' not in c for c in used), used
    absurd = backup(db=db, format='directory', jobs=100000, **login)
    assert_clear_failure(absurd, 'jobs', '100000')
