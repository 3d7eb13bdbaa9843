"""runbook.deploy.pg_backup against the real PostgreSQL and moto S3 of the local stack."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from urllib.parse import urlsplit

import boto3
import pytest

from helpers import ProcessWatcher, assert_clear_failure, connect, sql

MODULE = 'runbook.deploy.pg_backup'


@pytest.fixture
def backup(run_module, pg_conn_args, tmp_path):
    """Call pg_backup with the stack's credentials and a fresh dest (override any argument)."""
    dest = str(tmp_path / 'backups')

    def call(check=False, **args):
        merged = dict(pg_conn_args, dest=dest)
        merged.update(args)
        return run_module(MODULE, check=check, **merged)

    call.dest = dest
    return call


@pytest.fixture
def s3(stack):
    client = boto3.client('s3', endpoint_url=stack['RUNBOOK_S3_ENDPOINT_URL'], region_name='us-east-1')
    return client


@pytest.fixture
def bucket(s3):
    name = 'backups-%s' % uuid.uuid4().hex[:10]
    s3.create_bucket(Bucket=name)
    yield name
    keys = [o['Key'] for o in s3.list_objects_v2(Bucket=name).get('Contents', [])]
    if keys:
        s3.delete_objects(Bucket=name, Delete={'Objects': [{'Key': k} for k in keys]})
    for upload in s3.list_multipart_uploads(Bucket=name).get('Uploads', []):
        s3.abort_multipart_upload(Bucket=name, Key=upload['Key'], UploadId=upload['UploadId'])
    s3.delete_bucket(Bucket=name)


def s3_args(stack, bucket, **extra):
    args = dict(s3_bucket=bucket, s3_prefix='prod/pg', s3_endpoint_url=stack['RUNBOOK_S3_ENDPOINT_URL'],
                s3_region='us-east-1')
    args.update(extra)
    return args


def sha256(path):
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def listing(dest):
    return sorted(os.listdir(dest)) if os.path.isdir(dest) else []


def counts(stack, dbname):
    return dict(users=sql(stack, dbname, 'SELECT count(*) FROM public.users')[0][0],
                orders=sql(stack, dbname, 'SELECT count(*) FROM sales.orders')[0][0])


# -- taking backups -------------------------------------------------------------------------

def test_check_mode_writes_nothing_then_backup_then_reuse(backup, make_db):
    db = make_db()
    planned = backup(check=True, db=db, label='pre_migration', max_age='30m')
    assert planned['changed'] is True
    assert planned['backup']['planned'] is True
    assert not os.path.exists(backup.dest), 'check mode created dest'

    first = backup(db=db, label='pre_migration', max_age='30m')
    assert first['changed'] is True, first
    info = first['backup']
    assert info['name'].startswith('%s.pre_migration.' % db) and info['name'].endswith('.dump')
    assert os.path.isfile(info['path'])
    assert info['sha256'] == sha256(info['path'])
    assert info['size'] == os.path.getsize(info['path'])
    with open(info['path'] + '.sha256') as handle:
        assert handle.read() == '%s  %s\n' % (info['sha256'], info['name'])
    assert info['verification']['passed'] is True and info['verification']['toc_entries'] > 5
    assert oct(os.stat(backup.dest).st_mode & 0o777) == '0o700'
    assert not [n for n in listing(backup.dest) if n.startswith('.partial')]

    # A retry of the deployment reuses the verified backup instead of dumping production again.
    again = backup(db=db, label='pre_migration', max_age='30m')
    assert again['changed'] is False
    assert again['backup']['reused'] is True and again['backup']['path'] == info['path']
    assert not any('pg_dump --format' in c for c in again['executed_commands'])

    # Without max_age every run is a new backup.
    third = backup(db=db, label='pre_migration')
    assert third['changed'] is True and third['backup']['path'] != info['path']

    # Check mode against an existing dest predicts a backup and writes nothing, not even a lock file.
    os.unlink(os.path.join(backup.dest, '.pg_backup.lock'))
    before = listing(backup.dest)
    predicted = backup(check=True, db=db, label='pre_migration', keep=1)
    assert predicted['changed'] is True
    assert len(predicted['removed']) == 2, 'check mode should report what retention would delete'
    assert listing(backup.dest) == before


def test_max_age_ignores_old_and_other_labels(backup, make_db):
    db = make_db()
    first = backup(db=db, label='nightly')
    time.sleep(2)
    other = backup(db=db, label='pre_migration', max_age='1s')
    assert other['changed'] is True and other['backup']['label'] == 'pre_migration'
    stale = backup(db=db, label='nightly', max_age='1s')
    assert stale['changed'] is True and stale['backup']['path'] != first['backup']['path']


def test_reuse_key_reuses_only_the_same_deployments_backup(backup, make_db, stack):
    """The next version's deployment minutes later must not reuse the previous one's backup: that one is from before
    the previous deployment's migrations and writes (a restore rollback would lose them). Age alone reused it."""
    db = make_db()
    first = backup(db=db, label='pre_migration', max_age='30m', reuse_key='v1')
    assert first['changed'] is True and first['backup']['reuse_key'] == 'v1'
    rerun = backup(db=db, label='pre_migration', max_age='30m', reuse_key='v1')
    assert rerun['changed'] is False and rerun['backup']['reused'] is True
    assert rerun['backup']['path'] == first['backup']['path']
    sql(stack, db, 'CREATE TABLE written_by_v1 (id int)')  # v1's migrations ran
    time.sleep(1.1)  # a new name (names carry the second)
    second = backup(db=db, label='pre_migration', max_age='30m', reuse_key='v2')
    assert second['changed'] is True and second['backup']['reused'] is False, second
    assert second['backup']['path'] != first['backup']['path']
    # A re-run of v2 reuses v2's, not v1's, although v1's is young enough too.
    assert backup(db=db, label='pre_migration', max_age='30m', reuse_key='v2')['backup']['path'] == \
        second['backup']['path']


@pytest.mark.parametrize('fmt,extra,suffix', [
    ('plain', {}, '.sql'),
    ('plain', {'compress': 6}, '.sql.gz'),
    ('tar', {}, '.tar'),
    ('directory', {'jobs': 2}, '.dir'),
])
def test_formats_verify_by_restore(backup, make_db, stack, fmt, extra, suffix):
    db = make_db(rows=250)
    result = backup(db=db, format=fmt, verify='restore', **extra)
    assert result['changed'] is True, result
    info = result['backup']
    assert info['path'].endswith(suffix)
    ver = info['verification']
    assert ver['passed'] is True
    assert ver['row_counts'] == {'public.users': 250, 'sales.orders': 750}
    # This backup's scratch database is gone. Only this database's: tests on other workers verify at the same time.
    assert not sql(stack, 'postgres', "SELECT datname FROM pg_database WHERE datname LIKE %s",
                   ('pgbackup_verify_%s_%%' % db,))
    if fmt == 'directory':
        assert os.path.isdir(info['path'])
        lines = open(info['path'] + '.sha256').read().splitlines()
        assert len(lines) == len(os.listdir(info['path']))
        assert subprocess.run(['sha256sum', '-c', info['name'] + '.sha256'], cwd=backup.dest,
                              capture_output=True, check=False).returncode == 0


def test_schema_and_table_filters(backup, make_db, stack):
    db = make_db()
    partial = backup(db=db, schemas=['sales'], verify='restore')
    # sales.orders references public.users: a sales-only dump cannot be restored on its own, and verify says so.
    assert_clear_failure(partial, 'pg_restore', 'public.users')
    sql(stack, db, 'ALTER TABLE sales.orders DROP CONSTRAINT orders_user_id_fkey')
    only_sales = backup(db=db, schemas=['sales'], verify='restore')
    assert set(only_sales['backup']['verification']['row_counts']) == {'sales.orders'}
    no_orders = backup(db=db, exclude_tables=['sales.orders'], verify='restore')
    assert set(no_orders['backup']['verification']['row_counts']) == {'public.users'}
    for fmt in ('custom', 'plain'):
        only_public = backup(db=db, schemas=['public'], format=fmt, verify='restore')
        assert only_public['backup']['verification']['row_counts'] == {'public.users': 100}, only_public


def test_a_database_that_holds_nothing_yet_is_backed_up_verified_and_restored(backup, make_db, stack):
    """A first deployment backs up a database only created, before its first migration (issue 16 item 2): its
    archive's table of contents is empty, and that is a valid backup of it, under both verify modes."""
    db = make_db(rows=None)
    for fmt, verify in (('custom', 'list'), ('directory', 'list'), ('custom', 'restore'), ('plain', 'restore')):
        taken = backup(db=db, format=fmt, verify=verify, label='first_%s_%s' % (fmt, verify))
        assert taken['changed'] is True and taken['backup']['verification']['passed'] is True, taken
        if fmt != 'plain':
            assert taken['backup']['verification']['toc_entries'] == 0, taken
            assert taken['backup']['verification']['empty_database'] is True, taken
    target = make_db(rows=None)
    sql(stack, 'postgres', 'DROP DATABASE %s' % target)
    restored = backup(state='restored', db=target, source_db=db, label='first_custom_list')
    assert restored['changed'] is True and restored['restore']['created_database'] is True, restored
    assert sql(stack, target, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE n.nspname = 'public'") == [(0,)]


def test_verify_restore_counts_rows_in_the_dump_snapshot(backup, make_db, stack):
    """Rows written while pg_dump runs are not in the dump, and not in the source counts either."""
    db = make_db(rows=2000)
    stop = threading.Event()

    def writer():
        conn = connect(stack, db)
        with conn.cursor() as cursor:
            while not stop.is_set():
                cursor.execute("INSERT INTO public.users (email) VALUES (%s)", ('w%s@x' % uuid.uuid4().hex,))
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = backup(db=db, verify='restore')
    finally:
        stop.set()
        thread.join()
    assert result['backup']['verification']['passed'] is True, result
    assert result['backup']['verification']['row_counts']['public.users'] >= 2000


def test_retention_keeps_newest_locally_and_in_s3(backup, make_db, stack, bucket, s3):
    db = make_db()
    names = []
    for dummy in range(4):
        result = backup(db=db, label='nightly', keep=2, **s3_args(stack, bucket))
        assert result['changed'] is True, result
        names.append(result['backup']['name'])
    local = [n for n in listing(backup.dest) if not n.startswith('.')]
    assert sorted(local) == sorted(n + s for n in names[-2:] for s in ('', '.sha256', '.json'))
    keys = sorted(o['Key'] for o in s3.list_objects_v2(Bucket=bucket)['Contents'])
    assert keys == sorted('prod/pg/' + n + s for n in names[-2:] for s in ('', '.sha256', '.json'))
    assert any(names[0] in r for r in result['removed']) or any(names[1] in r for r in result['removed'])
    # Another label's backups are not touched by this label's retention.
    other = backup(db=db, label='pre_migration', keep=1)
    assert other['removed'] == []


def test_upload_with_checksum_metadata(backup, make_db, stack, bucket, s3):
    db = make_db()
    result = backup(db=db, s3_storage_class='STANDARD_IA', s3_encryption='AES256', **s3_args(stack, bucket))
    info = result['backup']
    key = 'prod/pg/' + info['name']
    assert info['s3_uri'] == 's3://%s/%s' % (bucket, key)
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head['Metadata']['sha256'] == info['sha256']
    assert head['StorageClass'] == 'STANDARD_IA'
    assert head['ServerSideEncryption'] == 'AES256'
    body = s3.get_object(Bucket=bucket, Key=key)['Body'].read()
    assert hashlib.sha256(body).hexdigest() == info['sha256']
    manifest = json.loads(open(info['path'] + '.json').read())
    assert manifest['s3_uri'] == info['s3_uri']
    # Reusing a backup that is already uploaded changes nothing.
    again = backup(db=db, max_age='1h', **s3_args(stack, bucket))
    assert again['changed'] is False and again['backup']['reused'] is True


def test_reused_backup_is_uploaded_when_missing_from_s3(backup, make_db, stack, bucket, s3):
    db = make_db()
    first = backup(db=db)
    second = backup(db=db, max_age='1h', **s3_args(stack, bucket))
    assert second['changed'] is True and second['backup']['reused'] is True
    assert s3.head_object(Bucket=bucket, Key='prod/pg/' + first['backup']['name'])['Metadata']['sha256'] == \
        first['backup']['sha256']


class S3Proxy(object):
    """An HTTP proxy in front of moto that logs every request and can answer some with 503 (S3 going down)."""

    def __init__(self, target_url, fail=None):
        self.log = []  # dicts: method, path, query, copy (an x-amz-copy-source header)
        self.fail = fail
        target = urlsplit(target_url)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):  # pylint: disable=arguments-differ
                pass

            def read_body(self):
                if 'chunked' in self.headers.get('Transfer-Encoding', ''):
                    data = b''
                    while True:
                        size = int(self.rfile.readline().split(b';')[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get('Content-Length') or 0)
                return self.rfile.read(length) if length else b''

            def relay(self):
                body = self.read_body()
                url = urlsplit(self.path)
                entry = dict(method=self.command, path=url.path, query=url.query,
                             copy='x-amz-copy-source' in (k.lower() for k in self.headers.keys()))
                proxy.log.append(entry)
                if proxy.fail and proxy.fail(entry):
                    payload = b'<Error><Code>ServiceUnavailable</Code><Message>S3 is down (test)</Message></Error>'
                    self.send_response(503)
                    self.send_header('Content-Length', str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = dict((k, v) for k, v in self.headers.items()
                               if k.lower() not in ('expect', 'connection', 'transfer-encoding', 'content-length'))
                headers['Content-Length'] = str(len(body))
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ('transfer-encoding', 'connection', 'content-length', 'date', 'server'):
                        self.send_header(key, value)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                if self.command != 'HEAD':
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def index(self, method, path, query=''):
        for number, entry in enumerate(self.log):
            if entry['method'] == method and entry['path'] == path and query in entry['query']:
                return number
        seen = [(e['method'], e['path'], e['query']) for e in self.log]
        raise AssertionError('no %s %s?%s in %s' % (method, path, query, seen))


def test_reuse_checks_the_s3_copy_and_uploads_it_again_when_missing_or_altered(backup, make_db, stack, bucket, s3):
    db = make_db()
    first = backup(db=db, **s3_args(stack, bucket))['backup']
    key = 'prod/pg/' + first['name']
    assert backup(db=db, max_age='1h', **s3_args(stack, bucket))['changed'] is False
    # The object is gone from S3: the reused backup goes up again.
    s3.delete_object(Bucket=bucket, Key=key)
    again = backup(db=db, max_age='1h', **s3_args(stack, bucket))
    assert again['changed'] is True and again['backup']['reused'] is True, again
    assert s3.head_object(Bucket=bucket, Key=key)['Metadata']['sha256'] == first['sha256']
    # Its sidecar disagrees with the object's checksum: uploaded again, sidecar included.
    s3.put_object(Bucket=bucket, Key=key + '.sha256', Body=('%s  x\n' % ('0' * 64)).encode())
    fixed = backup(db=db, max_age='1h', **s3_args(stack, bucket))
    assert fixed['changed'] is True
    assert s3.get_object(Bucket=bucket, Key=key + '.sha256')['Body'].read().decode().split()[0] == first['sha256']
    assert backup(db=db, max_age='1h', **s3_args(stack, bucket))['changed'] is False


@pytest.mark.slow
def test_multipart_upload_overlapping_the_dump(backup, big_db, stack, bucket, s3):
    with S3Proxy(stack['RUNBOOK_S3_ENDPOINT_URL']) as proxy:
        result = backup(db=big_db, **s3_args(stack, bucket, s3_endpoint_url=proxy.url))
    info = result['backup']
    assert result['changed'] is True, result
    assert info['size'] > 20 * 1024 * 1024, 'the dump must span several 16 MiB parts for this test to mean anything'
    key = 'prod/pg/' + info['name']
    body = s3.get_object(Bucket=bucket, Key=key)['Body'].read()
    assert len(body) == info['size']
    assert hashlib.sha256(body).hexdigest() == info['sha256'] == sha256(info['path'])
    # Metadata known when the upload started travels with the object; the sha256 is its tag and its sidecar.
    metadata = s3.head_object(Bucket=bucket, Key=key)['Metadata']
    assert metadata['db'] == big_db and metadata['format'] == 'custom' and metadata['label'] == 'backup'
    tags = {t['Key']: t['Value'] for t in s3.get_object_tagging(Bucket=bucket, Key=key)['TagSet']}
    assert tags == {'sha256': info['sha256']}
    sidecar = s3.get_object(Bucket=bucket, Key=key + '.sha256')['Body'].read().decode()
    assert sidecar == '%s  %s\n' % (info['sha256'], info['name'])
    # Straight to the final key: the sidecar exists before the upload completes, the tag comes after.
    path = '/%s/%s' % (bucket, key)
    created = proxy.index('POST', path, 'uploads')
    sidecar_put = proxy.index('PUT', path + '.sha256')
    completed = proxy.index('POST', path, 'uploadId=')
    tagged = proxy.index('PUT', path, 'tagging')
    parts = [n for n, e in enumerate(proxy.log) if e['method'] == 'PUT' and 'partNumber=' in e['query']]
    assert created < min(parts) and max(parts) < sidecar_put < completed < tagged, proxy.log
    assert len(parts) >= 2
    # No staging object, no server-side copy, nothing left over.
    assert not [e for e in proxy.log if '.partial' in e['path'] or e['copy']]
    keys = [o['Key'] for o in s3.list_objects_v2(Bucket=bucket)['Contents']]
    assert sorted(keys) == sorted([key, key + '.sha256', key + '.json'])
    assert not s3.list_multipart_uploads(Bucket=bucket).get('Uploads')
    assert info['timings']['dump'] > 0 and 'upload_finish' in info['timings']

    # Restoring it from S3 verifies it against the tag and the sidecar (there is no sha256 metadata).
    target = 'pgbackup_big_restore_%s' % uuid.uuid4().hex[:6]
    try:
        restored = backup(state='restored', db=target, src=info['s3_uri'], jobs=2,
                          dest=backup.dest + '_restore', **s3_args(stack, bucket))
        assert restored['changed'] is True, restored
        assert restored['restore']['checksum_verified'] is True and restored['backup']['sha256'] == info['sha256']
        assert sql(stack, target, 'SELECT count(*) FROM blobs')[0][0] == 1500000
    finally:
        sql(stack, 'postgres', 'DROP DATABASE IF EXISTS %s WITH (FORCE)' % target)


@pytest.mark.slow
def test_s3_down_mid_multipart_leaves_no_object_and_no_upload(backup, big_db, stack, bucket, s3):
    def down_after_first_part(entry):
        return entry['method'] == 'PUT' and 'partNumber=' in entry['query'] and 'partNumber=1&' not in \
            entry['query'] + '&'

    with S3Proxy(stack['RUNBOOK_S3_ENDPOINT_URL'], fail=down_after_first_part) as proxy:
        result = backup(db=big_db, **s3_args(stack, bucket, s3_endpoint_url=proxy.url, s3_retries=1))
    assert_clear_failure(result, 'upload of part', 'ServiceUnavailable', 'the verified local backup is kept at')
    assert [e for e in proxy.log if 'partNumber=1&' in e['query'] + '&'], 'part 1 never went up: not mid-multipart'
    assert [e for e in proxy.log if e['method'] == 'DELETE' and 'uploadId=' in e['query']], 'no AbortMultipartUpload'
    assert not s3.list_objects_v2(Bucket=bucket).get('Contents'), 'an object (or sidecar) was left in S3'
    assert not s3.list_multipart_uploads(Bucket=bucket).get('Uploads'), 'a multipart upload was left dangling'
    kept = [n for n in listing(backup.dest) if n.endswith('.dump')]
    assert len(kept) == 1
    path = os.path.join(backup.dest, kept[0])
    assert open(path + '.sha256').read().split()[0] == sha256(path)


@pytest.mark.parametrize('recorded', ['tag', 'sidecar', 'disagree', 'none'])
def test_restore_from_s3_checks_tag_and_sidecar(backup, make_db, stack, bucket, s3, tmp_path, recorded):
    """An S3 backup without sha256 metadata (a multipart upload) is verified against its tag or its sidecar."""
    db = make_db(rows=40)
    info = backup(db=db)['backup']
    key = 'prod/pg/' + info['name']
    with open(info['path'], 'rb') as handle:
        s3.put_object(Bucket=bucket, Key=key, Body=handle.read(), Metadata={'db': db})
    wrong = hashlib.sha256(b'something else').hexdigest()
    if recorded in ('tag', 'disagree'):
        s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={'TagSet': [{'Key': 'sha256', 'Value': info['sha256']}]})
    if recorded in ('sidecar', 'disagree'):
        digest = info['sha256'] if recorded == 'sidecar' else wrong
        s3.put_object(Bucket=bucket, Key=key + '.sha256', Body=('%s  %s\n' % (digest, info['name'])).encode())
    target = make_db(rows=3)
    result = backup(state='restored', db=target, src='s3://%s/%s' % (bucket, key), dest=str(tmp_path / 'dl'),
                    clean=True, **s3_args(stack, bucket))
    if recorded in ('tag', 'sidecar'):
        assert result['changed'] is True, result
        assert result['restore']['checksum_verified'] is True
        assert counts(stack, target) == {'users': 40, 'orders': 120}
    else:
        assert_clear_failure(result, *(['checksums disagree', 'tag', 'sidecar'] if recorded == 'disagree'
                                       else ['no recorded sha256']))
        assert counts(stack, target) == {'users': 3, 'orders': 9}, 'the target was touched'


# -- failures -------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def big_db(stack):
    """A database whose dump takes long enough to watch and to kill (about 1.5 M rows of random text)."""
    name = 'big_%s' % uuid.uuid4().hex[:6]
    sql(stack, 'postgres', 'CREATE DATABASE %s' % name)
    sql(stack, name, """CREATE TABLE blobs (id serial PRIMARY KEY, a text, b text);
                        INSERT INTO blobs (a, b) SELECT md5(random()::text), md5(random()::text)
                        FROM generate_series(1, 1500000)""")
    yield name
    sql(stack, 'postgres', 'DROP DATABASE IF EXISTS %s WITH (FORCE)' % name)


def dumps_database(pid, dbname):
    """Whether process pid is a pg_dump of dbname (pg_backup passes the database in PGDATABASE)."""
    try:
        with open('/proc/%d/environ' % pid, 'rb') as handle:
            return ('PGDATABASE=%s' % dbname).encode() in handle.read().split(b'\0')
    except OSError:
        return False


@pytest.mark.slow
def test_password_never_on_a_command_line_nor_in_results(backup, big_db, stack):
    password = stack['RUNBOOK_PG_PASSWORD'].encode()
    leaks = []

    inherited = {k.encode(): v.encode() for k, v in os.environ.items()}

    def inspect(pid, cmdline):
        if password in cmdline:
            leaks.append(('cmdline', pid))
        try:
            with open('/proc/%d/environ' % pid, 'rb') as handle:
                environ = dict(item.partition(b'=')[::2] for item in handle.read().split(b'\0') if item)
        except OSError:
            return
        # pg_dump gets the password in PGPASSWORD (its own environment only: nothing on disk, see
        # test_pg_backup_hardening.py); variables inherited from whoever runs Ansible are not the module's doing;
        # anything else is a leak.
        leaks.extend(('environ', key) for key, value in environ.items()
                     if password in value and inherited.get(key) != value and key != b'PGPASSWORD')
        if environ.get(b'PGPASSFILE'):
            leaks.append(('passfile', environ[b'PGPASSFILE']))

    def inspect_ours(pid, cmdline):
        if dumps_database(pid, big_db):
            seen.append(pid)
            inspect(pid, cmdline)

    seen = []
    with ProcessWatcher('pg_dump', '--format=custom', on_seen=inspect_ours):
        result = backup(db=big_db, label='secret')
    assert seen, 'pg_dump was never observed running; the test could not check its command line'
    assert leaks == []
    assert result['changed'] is True
    assert password.decode() not in json.dumps(result)


@pytest.mark.slow
def test_killed_pg_dump_leaves_no_backup_and_keeps_earlier_ones(backup, big_db, make_db):
    db = make_db()
    earlier = backup(db=db, label='killme')['backup']
    before = sha256(earlier['path'])
    dest_before = listing(backup.dest)
    killed = []

    def kill_once(pid, dummy):
        if not killed and dumps_database(pid, big_db):
            time.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    # Dump the big database under the same dest and label, and kill pg_dump halfway.
    with ProcessWatcher('pg_dump', '--format=custom', on_seen=kill_once):
        result = backup(db=big_db, label='killme')
    assert killed, 'pg_dump finished before it could be killed'
    assert_clear_failure(result, 'killed by signal 9')
    assert listing(backup.dest) == dest_before
    assert sha256(earlier['path']) == before


@pytest.mark.slow
def test_disk_full_is_a_clear_error_and_leaves_nothing(backup, big_db, tmp_path):
    mount = tmp_path / 'tiny'
    mount.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(mount)], check=True)
    try:
        keep = mount / 'keep.txt'
        keep.write_text('earlier backup stand-in')
        result = backup(db=big_db, dest=str(mount))
        assert_clear_failure(result, 'No space left on device', str(mount))
        assert sorted(os.listdir(mount)) == ['.pg_backup.lock', 'keep.txt']
        assert keep.read_text() == 'earlier backup stand-in'
    finally:
        subprocess.run(['umount', str(mount)], check=True)


def test_s3_endpoint_down_fails_and_keeps_local_backup(backup, make_db):
    db = make_db()
    result = backup(db=db, s3_bucket='nowhere', s3_endpoint_url='http://127.0.0.1:9', s3_retries=1)
    assert_clear_failure(result, 'upload', 'the verified local backup is kept at')
    kept = [n for n in listing(backup.dest) if n.endswith('.dump')]
    assert len(kept) == 1
    path = os.path.join(backup.dest, kept[0])
    assert open(path + '.sha256').read().split()[0] == sha256(path)
    assert 's3_uri' not in json.loads(open(path + '.json').read())


@pytest.mark.slow
def test_s3_down_during_a_streamed_upload_keeps_the_local_backup(backup, big_db):
    result = backup(db=big_db, s3_bucket='nowhere', s3_endpoint_url='http://127.0.0.1:9', s3_retries=1)
    assert_clear_failure(result, 'the verified local backup is kept at')
    kept = [n for n in listing(backup.dest) if n.endswith('.dump')]
    assert len(kept) == 1 and os.path.getsize(os.path.join(backup.dest, kept[0])) > 20 * 1024 * 1024
    path = os.path.join(backup.dest, kept[0])
    assert open(path + '.sha256').read().split()[0] == sha256(path)


def test_unwritable_dest(backup, make_db, tmp_path):
    db = make_db()
    target = tmp_path / 'readonly'
    target.mkdir()
    # root ignores permission bits, so make the directory unwritable with a read-only bind mount.
    subprocess.run(['mount', '--bind', '-o', 'ro', str(target), str(target)], check=True)
    try:
        subprocess.run(['mount', '-o', 'remount,ro,bind', str(target)], check=True)
        result = backup(db=db, dest=str(target))
        assert_clear_failure(result, str(target))
        assert 'Traceback' not in result['msg']
    finally:
        subprocess.run(['umount', str(target)], check=True)


# -- restore --------------------------------------------------------------------------------

def test_restore_into_new_database_from_label(backup, make_db, stack):
    db = make_db(rows=300)
    taken = backup(db=db, label='pre_migration')
    target = make_db(rows=None)
    sql(stack, 'postgres', 'DROP DATABASE %s' % target)
    planned = backup(check=True, state='restored', db=target, source_db=db, label='pre_migration')
    assert planned['changed'] is True
    assert not sql(stack, 'postgres', 'SELECT 1 FROM pg_database WHERE datname = %s', (target,))
    result = backup(state='restored', db=target, source_db=db, label='pre_migration')
    assert result['changed'] is True, result
    assert result['restore']['created_database'] is True
    assert result['restore']['checksum_verified'] is True
    assert result['restore']['source'] == taken['backup']['path']
    assert counts(stack, target) == {'users': 300, 'orders': 900}


def test_restore_over_live_database_takes_safety_backup(backup, make_db, stack):
    db = make_db(rows=100)
    taken = backup(db=db, label='pre_migration')
    sql(stack, db, "DELETE FROM sales.orders; INSERT INTO public.users (email) VALUES ('late@x')")
    holder = connect(stack, db)
    try:
        refused = backup(state='restored', db=db, src=taken['backup']['path'], clean=True)
        assert_clear_failure(refused, 'other session', 'terminate_sessions')
        assert counts(stack, db) == {'users': 101, 'orders': 0}
        result = backup(state='restored', db=db, src=taken['backup']['path'], clean=True, terminate_sessions=True)
    finally:
        holder.close()
    assert result['changed'] is True, result
    assert result['restore']['terminated_sessions']
    assert counts(stack, db) == {'users': 100, 'orders': 300}
    safety = result['restore']['safety_backup']
    assert safety['label'] == 'pre_restore' and os.path.exists(safety['path'])
    # The safety backup holds the state before the restore.
    check = make_db(rows=None)
    backup(state='restored', db=check, src=safety['path'], clean=True)
    assert counts(stack, check) == {'users': 101, 'orders': 0}


def databases_like(stack, pattern):
    return [r[0] for r in sql(stack, 'postgres', 'SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1',
                              (pattern,))]


@pytest.fixture
def reader_role(stack):
    """A role to grant database privileges to; DROP OWNED revokes them everywhere before it is dropped."""
    name = 'reader_%s' % uuid.uuid4().hex[:8]
    sql(stack, 'postgres', 'CREATE ROLE %s' % name)
    yield name
    sql(stack, 'postgres', 'DROP OWNED BY %s; DROP ROLE %s' % (name, name))


def database_acl(stack, db):
    return sorted(sql(stack, 'postgres', """
        SELECT pg_get_userbyid(a.grantor), CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
               a.privilege_type, a.is_grantable
        FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s""", (db,)))


def test_clean_restore_replaces_the_database_despite_dependent_objects(backup, make_db, stack, reader_role):
    """pg_restore --clean cannot drop a table a materialized view created since depends on; the module restores
    into a new database and swaps it in, so objects created after the backup are gone and the data is the backup's."""
    db = make_db(rows=60)
    sql(stack, db, 'CREATE MATERIALIZED VIEW public.user_count AS SELECT count(*) AS n FROM public.users')
    sql(stack, 'postgres', "ALTER DATABASE %s SET work_mem = '7MB'" % db)
    # Database-level properties the archive does not hold: privileges, a role's setting in it, limit, comment.
    sql(stack, 'postgres', """REVOKE ALL ON DATABASE {db} FROM PUBLIC;
        GRANT CONNECT ON DATABASE {db} TO {role}; GRANT TEMPORARY ON DATABASE {db} TO {role} WITH GRANT OPTION;
        ALTER ROLE {role} IN DATABASE {db} SET statement_timeout = '5s';
        ALTER DATABASE {db} CONNECTION LIMIT 40; COMMENT ON DATABASE {db} IS 'cases, production'""".format(
        db=db, role=reader_role))
    acl = database_acl(stack, db)
    assert (reader_role, 'TEMPORARY', True) in [a[1:] for a in acl] and 'PUBLIC' not in [a[1] for a in acl], acl
    taken = backup(db=db, label='pre_migration')['backup']
    # After the backup: a materialized view over a table in the archive, a new table, changed data.
    sql(stack, db, """CREATE MATERIALIZED VIEW sales.big_orders AS SELECT * FROM sales.orders WHERE total > 10;
                      CREATE TABLE public.created_since (id int); INSERT INTO public.created_since VALUES (1);
                      DELETE FROM sales.orders WHERE id % 2 = 0; INSERT INTO public.users (email) VALUES ('new@x')""")
    owner = sql(stack, 'postgres', 'SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate '
                'FROM pg_database WHERE datname = %s', (db,))

    planned = backup(check=True, state='restored', db=db, src=taken['path'], clean=True)
    assert planned['changed'] is True and planned['restore']['method'] == 'swap'
    assert planned['restore']['scratch_db'].startswith(db + '__restore_')
    assert databases_like(stack, db + '\\_\\_%') == [], 'check mode created a database'
    assert counts(stack, db) == {'users': 61, 'orders': 90}

    result = backup(state='restored', db=db, src=taken['path'], clean=True)
    assert result['changed'] is True, result
    restore = result['restore']
    assert restore['method'] == 'swap' and restore['safety_backup']['label'] == 'pre_restore'
    assert restore['previous_db_dropped'] is True and restore['previous_db'] is None
    assert databases_like(stack, db + '\\_\\_%') == [], 'a scratch or replaced database was left behind'
    assert counts(stack, db) == {'users': 60, 'orders': 180}
    tables = [r[0] for r in sql(stack, db, "SELECT relname FROM pg_class WHERE relkind IN ('r', 'm') "
                                           "AND relnamespace::regnamespace::text IN ('public', 'sales') ORDER BY 1")]
    # The view that was in the archive is back (and populated); the one created since is gone, like the table.
    assert tables == ['orders', 'user_count', 'users'], tables
    assert sql(stack, db, 'SELECT n FROM public.user_count')[0][0] == 60
    # The database keeps its owner, encoding, locale and settings.
    assert sql(stack, 'postgres', 'SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate '
               'FROM pg_database WHERE datname = %s', (db,)) == owner
    settings = sorted(sql(stack, 'postgres', "SELECT coalesce(r.rolname, '*'), s.setconfig FROM pg_db_role_setting s "
                          'JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole '
                          'WHERE d.datname = %s', (db,)))
    assert settings == [('*', ['work_mem=7MB']), (reader_role, ['statement_timeout=5s'])]
    # ... and its privileges, connection limit and comment.
    assert database_acl(stack, db) == acl
    assert sql(stack, 'postgres', 'SELECT d.datconnlimit, shobj_description(d.oid, %s) FROM pg_database d '
               'WHERE d.datname = %s', ('pg_database', db)) == [(40, 'cases, production')]

    # Without a safety backup the replaced database is kept (its name is returned), unless keep_previous=false.
    sql(stack, db, 'CREATE TABLE public.created_again (id int)')
    kept = backup(state='restored', db=db, src=taken['path'], clean=True, safety_backup=False)
    previous = kept['restore']['previous_db']
    try:
        assert previous and previous.startswith(db + '__pre_restore_'), kept
        assert databases_like(stack, db + '\\_\\_%') == [previous]
        assert sql(stack, previous, "SELECT count(*) FROM pg_class WHERE relname = 'created_again'")[0][0] == 1
    finally:
        if previous:
            sql(stack, 'postgres', 'DROP DATABASE IF EXISTS %s WITH (FORCE)' % previous)
    dropped = backup(state='restored', db=db, src=taken['path'], clean=True, safety_backup=False, keep_previous=False)
    assert dropped['restore']['previous_db_dropped'] is True
    assert databases_like(stack, db + '\\_\\_%') == []


def test_failed_clean_restore_leaves_target_and_no_scratch(backup, make_db, stack):
    """An archive damaged in the middle of its data (its checksum recorded after the damage) fails in the scratch
    database: the target is untouched and the scratch database is dropped."""
    db = make_db(rows=3000)
    taken = backup(db=db)['backup']
    data = bytearray(open(taken['path'], 'rb').read())
    middle = len(data) // 2
    for offset in range(middle, middle + 64):
        data[offset] ^= 0x5A
    with open(taken['path'], 'wb') as handle:
        handle.write(data)
    with open(taken['path'] + '.sha256', 'w') as handle:
        handle.write('%s  %s\n' % (hashlib.sha256(bytes(data)).hexdigest(), taken['name']))
    target = make_db(rows=10)
    sql(stack, target, 'CREATE MATERIALIZED VIEW public.mv AS SELECT count(*) FROM public.users')
    result = backup(state='restored', db=target, src=taken['path'], clean=True, terminate_sessions=True)
    assert_clear_failure(result, 'pg_restore', target + '__restore_')
    assert counts(stack, target) == {'users': 10, 'orders': 30}, 'the target was touched'
    assert sql(stack, target, 'SELECT count(*) FROM public.mv')[0][0] == 1
    assert databases_like(stack, target + '\\_\\_%') == [], 'a scratch database was left behind'


def test_restore_from_s3_uri(backup, make_db, stack, bucket, tmp_path):
    db = make_db(rows=50)
    taken = backup(db=db, **s3_args(stack, bucket))
    target = make_db(rows=None)
    fresh_dest = str(tmp_path / 'elsewhere')
    result = backup(state='restored', db=target, dest=fresh_dest, src=taken['backup']['s3_uri'],
                    **s3_args(stack, bucket))
    assert result['changed'] is True, result
    assert result['restore']['checksum_verified'] is True
    assert counts(stack, target) == {'users': 50, 'orders': 150}
    assert os.path.exists(os.path.join(fresh_dest, taken['backup']['name']))


@pytest.mark.parametrize('damage', ['corrupt', 'truncate'])
def test_restore_refuses_damaged_archive(backup, make_db, stack, damage):
    db = make_db(rows=100)
    taken = backup(db=db)['backup']
    data = bytearray(open(taken['path'], 'rb').read())
    if damage == 'corrupt':
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[:len(data) // 2]
    with open(taken['path'], 'wb') as handle:
        handle.write(data)
    target = make_db(rows=10)
    result = backup(state='restored', db=target, src=taken['path'], clean=True)
    assert_clear_failure(result, 'refusing to restore', 'corrupt or truncated')
    assert counts(stack, target) == {'users': 10, 'orders': 30}, 'the target was touched'


def test_failed_restore_leaves_target_as_it_was(backup, make_db, stack):
    """Without clean, restoring over existing tables fails inside one transaction: nothing changes."""
    db = make_db(rows=20)
    taken = backup(db=db)['backup']
    target = make_db(rows=7)
    result = backup(state='restored', db=target, src=taken['path'], safety_backup=False)
    assert_clear_failure(result, 'pg_restore')
    assert counts(stack, target) == {'users': 7, 'orders': 21}


def test_restore_without_recorded_checksum_is_refused(backup, make_db, stack, tmp_path):
    db = make_db(rows=5)
    taken = backup(db=db)['backup']
    os.unlink(taken['path'] + '.sha256')
    target = make_db(rows=None)
    refused = backup(state='restored', db=target, src=taken['path'])
    assert_clear_failure(refused, 'no recorded sha256', 'checksum=')
    ok = backup(state='restored', db=target, src=taken['path'], checksum=taken['sha256'])
    assert ok['changed'] is True and counts(stack, target) == {'users': 5, 'orders': 15}


# -- bad input ------------------------------------------------------------------------------

@pytest.fixture
def fake_old_pg_dump(tmp_path):
    """Test double of an old pg_dump: it only answers --version, as pg_dump 12 does."""
    bindir = tmp_path / 'pg12' / 'bin'
    bindir.mkdir(parents=True)
    script = bindir / 'pg_dump'
    script.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "pg_dump (PostgreSQL) 12.20" && exit 0\nexit 1\n')
    script.chmod(0o755)
    return str(bindir)


BAD_INPUTS = [
    (dict(label='pre.migration'), ['label', "letters, digits"]),
    (dict(compress=12), ['compress must be between 0 and 9']),
    (dict(format='tar', compress=5), ['compress is not supported by the tar format']),
    (dict(jobs=0), ['jobs must be 1 or more']),
    (dict(jobs=4), ['jobs > 1 needs format=directory']),
    (dict(keep=-1), ['keep must be 0']),
    (dict(max_age='soon'), ["max_age 'soon' is not a duration"]),
    (dict(checksum='abc', state='restored'), ['checksum must be a sha256']),
    (dict(src='s3://only-bucket', state='restored'), ['must name a bucket and a key']),
    (dict(db=None, db_url='mysql://u:p@localhost/app'), ['db_url must start with postgres://']),
    (dict(db=None, db_url='postgres://u@127.0.0.1/app?sslmod=require'), ["unsupported query parameter 'sslmod'"]),
    (dict(db='no_such_database_x'), ["database 'no_such_database_x'", 'does not exist']),
    (dict(login_password='wrong-password'), ['password authentication failed', 'login_password']),
    (dict(login_port=9), ['could not connect', 'login_port']),
    (dict(pg_bin_dir='/nonexistent/bin'), ["pg_dump was not found in pg_bin_dir '/nonexistent/bin'"]),
    (dict(format='zip'), ['format']),
    (dict(state='restored', label='nothing_here'), ["no backup of database", "label 'nothing_here'"]),
]


@pytest.mark.parametrize('args,fragments', BAD_INPUTS, ids=[str(sorted(a)) + str(i) for i, (a, f) in enumerate(BAD_INPUTS)])
def test_bad_input_is_a_clear_error(backup, make_db, args, fragments):
    db = make_db(rows=5)
    merged = dict(db=db)
    merged.update(args)
    merged = {k: v for k, v in merged.items() if v is not None}
    result = backup(**merged)
    assert_clear_failure(result, *fragments)
    if os.path.isdir(backup.dest):
        assert not [n for n in listing(backup.dest) if n.endswith('.dump')], 'a failed run left a backup'


def test_dest_is_a_file(backup, make_db, tmp_path):
    path = tmp_path / 'afile'
    path.write_text('x')
    assert_clear_failure(backup(db=make_db(rows=5), dest=str(path)), 'is not a directory')


def test_pg_dump_older_than_server(backup, make_db, fake_old_pg_dump):
    result = backup(db=make_db(rows=5), pg_bin_dir=fake_old_pg_dump)
    assert_clear_failure(result, 'pg_dump 12', 'older than the PostgreSQL 15 server', 'pg_bin_dir')


def test_db_url_password_is_not_leaked(backup, make_db, stack):
    db = make_db(rows=5)
    url = 'postgresql://%s:%s@%s:%s/%s' % (
        stack['RUNBOOK_PG_USER'], stack['RUNBOOK_PG_PASSWORD'], stack['RUNBOOK_PG_HOST'], stack['RUNBOOK_PG_PORT'], db)
    result = backup(login_host=None, login_port=None, login_user=None, login_password=None, db_url=url)
    assert result['changed'] is True, result
    assert stack['RUNBOOK_PG_PASSWORD'] not in json.dumps(result)
    bad = backup(login_host=None, login_port=None, login_user=None, login_password=None,
                 db_url=url.replace(stack['RUNBOOK_PG_PASSWORD'], 'nope-' + stack['RUNBOOK_PG_PASSWORD'][:4]))
    assert_clear_failure(bad, 'password authentication failed')
