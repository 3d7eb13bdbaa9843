#!/usr/bin/env python
"""Benchmark: runbook.deploy.pg_backup against the runbook's own commands, on a >= 1 GB pgbench database.

Prints, from one run (rounds alternate so both sides see the same machine):
  raw `pg_dump -Fc`                  vs  pg_backup (verify=list, no upload)      target: within 5 %
  raw `pg_dump -Fc` + S3 upload      vs  pg_backup (verify=list, S3 upload)      target: well under the sum

The reference upload is boto3's managed `upload_file` (what `aws s3 cp` does) to the same S3 endpoint.
Loopback moto takes a 371 MB dump in ~2.6 s, so overlapping the upload with the dump can save at most that;
`--upload-mbit N` puts both sides (the reference upload and pg_backup) behind the same rate-limited loopback
TCP proxy (bench/s3_rate_proxy.py, a token bucket of N Mbit/s each way) in front of moto, like a real link.
pg_backup runs through `ansible localhost -m runbook.deploy.pg_backup`, as a user runs it, so Ansible's start-up
is included in its time; the same run times `ansible localhost -m ansible.builtin.ping` (the start-up every
task pays, whatever it does) and prints pg_backup's time without it too.

pgbench's `filler` column is blank padding that gzip shrinks fifty-fold, so a 1 GB pgbench database dumps to
20 MB in seconds. `--random-filler` fills it with random text, as real rows are, for a dump (and an upload)
of realistic size. Needs the local stack (postgres, moto): `make stack-start`, then
`.venv/bin/python bench/pg_backup_bench.py [--scale 70] [--rounds 2]` with tests/scripts/env.sh sourced.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import boto3
import psycopg2

PG_BIN = os.environ.get('RUNBOOK_PG_BINDIR', '/usr/lib/postgresql/15/bin')


def env_or_die(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit('%s is not set: start the stack and source tests/scripts/env.sh' % name)
    return value


def pg_env():
    env = dict(os.environ)
    env.update(PGHOST=env_or_die('RUNBOOK_PG_HOST'), PGPORT=env_or_die('RUNBOOK_PG_PORT'),
               PGUSER=env_or_die('RUNBOOK_PG_USER'), PGPASSWORD=env_or_die('RUNBOOK_PG_PASSWORD'))
    return env


def database_size(dbname):
    conn = psycopg2.connect(host=os.environ['RUNBOOK_PG_HOST'], port=os.environ['RUNBOOK_PG_PORT'],
                            user=os.environ['RUNBOOK_PG_USER'], password=os.environ['RUNBOOK_PG_PASSWORD'],
                            dbname='postgres')
    try:
        with conn.cursor() as cursor:
            cursor.execute('SELECT pg_database_size(%s) FROM pg_database WHERE datname = %s', (dbname, dbname))
            row = cursor.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def ensure_pgbench(dbname, scale, random_filler):
    size = database_size(dbname)
    if size and size >= 1000 * 1000 * 1000:
        return size
    env = pg_env()
    subprocess.run([os.path.join(PG_BIN, 'dropdb'), '--if-exists', dbname], env=env, check=True)
    subprocess.run([os.path.join(PG_BIN, 'createdb'), dbname], env=env, check=True)
    print('creating pgbench database %s at scale %d ...' % (dbname, scale), flush=True)
    subprocess.run([os.path.join(PG_BIN, 'pgbench'), '-i', '-q', '-s', str(scale), dbname], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    if random_filler:
        print('filling pgbench_accounts.filler with random text ...', flush=True)
        subprocess.run([os.path.join(PG_BIN, 'psql'), '-q', '-d', dbname, '-c',
                        "UPDATE pgbench_accounts SET filler = substr(md5(random()::text) || md5(random()::text)"
                        " || md5(random()::text), 1, 84)"], env=env, check=True)
        subprocess.run([os.path.join(PG_BIN, 'vacuumdb'), '--full', dbname], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run([os.path.join(PG_BIN, 'vacuumdb'), '--analyze', dbname], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return database_size(dbname)


def ansible_startup():
    subprocess.run(['ansible', 'localhost', '-c', 'local', '-m', 'ansible.builtin.ping'], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def raw_dump(dbname, path):
    subprocess.run([os.path.join(PG_BIN, 'pg_dump'), '-Fc', '-f', path, dbname], env=pg_env(), check=True)


def raw_upload(client, bucket, path):
    client.upload_file(path, bucket, 'reference/' + os.path.basename(path))


def start_rate_proxy(endpoint, mbit):
    """Start bench/s3_rate_proxy.py in front of endpoint; return (process, its http:// URL)."""
    target = endpoint.split('://', 1)[-1].rstrip('/')
    proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), 's3_rate_proxy.py'),
                             '--target', target, '--mbit', str(mbit)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith('PORT '):
        proc.kill()
        raise SystemExit('the rate-limiting proxy did not start: %r' % line)
    return proc, 'http://127.0.0.1:%s' % line.split()[1]


def run_pg_backup(dbname, dest, bucket=None, endpoint=None):
    args = dict(login_host=os.environ['RUNBOOK_PG_HOST'], login_port=int(os.environ['RUNBOOK_PG_PORT']),
                login_user=os.environ['RUNBOOK_PG_USER'], login_password=os.environ['RUNBOOK_PG_PASSWORD'],
                db=dbname, dest=dest, label='bench', verify='list')
    if bucket:
        args.update(s3_bucket=bucket, s3_prefix='pg_backup', s3_endpoint_url=endpoint, s3_region='us-east-1')
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK='ansible.builtin.json', ANSIBLE_LOAD_CALLBACK_PLUGINS='1')
    proc = subprocess.run(['ansible', 'localhost', '-c', 'local', '-m', 'runbook.deploy.pg_backup', '-a',
                           json.dumps(args)], env=env, capture_output=True, text=True, check=False)
    try:
        result = json.loads(proc.stdout)['plays'][0]['tasks'][0]['hosts']['localhost']
    except (ValueError, KeyError, IndexError):
        raise SystemExit('pg_backup did not run: %s %s' % (proc.stdout[-2000:], proc.stderr[-2000:]))
    if result.get('failed'):
        raise SystemExit('pg_backup failed: %s' % result.get('msg'))
    return result['backup']


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--scale', type=int, default=70, help='pgbench scale (70 is about 1.05 GB)')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--random-filler', action='store_true', help='random text in pgbench_accounts.filler')
    parser.add_argument('--db', help='database name (default bench_pgbench, or bench_pgbench_random)')
    parser.add_argument('--upload-mbit', type=float, metavar='N',
                        help='both uploads go through a loopback proxy limited to N Mbit/s each way (e.g. 400)')
    parser.add_argument('--no-local', action='store_true', help='skip pg_backup without upload (the S3 rows only)')
    opts = parser.parse_args()
    opts.db = opts.db or ('bench_pgbench_random' if opts.random_filler else 'bench_pgbench')

    size = ensure_pgbench(opts.db, opts.scale, opts.random_filler)
    endpoint = env_or_die('RUNBOOK_S3_ENDPOINT_URL')
    admin = boto3.client('s3', endpoint_url=endpoint, region_name='us-east-1')
    proxy = None
    if opts.upload_mbit:
        proxy, endpoint = start_rate_proxy(endpoint, opts.upload_mbit)
    client = boto3.client('s3', endpoint_url=endpoint, region_name='us-east-1')
    bucket = 'bench-%d' % os.getpid()
    admin.create_bucket(Bucket=bucket)
    load_before = os.getloadavg()
    work = tempfile.mkdtemp(prefix='pg_backup_bench_')
    rows = {'raw_dump': [], 'raw_upload': [], 'pg_backup': [], 'pg_backup_s3': [], 'ansible': [],
            'inner_dump': [], 'after_dump': [], 'inner_dump_s3': [], 'after_dump_s3': []}
    dump_size = None
    try:
        for round_no in range(1, opts.rounds + 1):
            path = os.path.join(work, 'raw_%d.dump' % round_no)
            t_dump, dummy = timed(lambda: raw_dump(opts.db, path))
            t_up, dummy = timed(lambda: raw_upload(client, bucket, path))
            dump_size = os.path.getsize(path)
            os.unlink(path)
            os.makedirs(os.path.join(work, 'local_%d' % round_no))
            if opts.no_local:
                t_mod, local = 0.0, None
            else:
                t_mod, local = timed(lambda: run_pg_backup(opts.db, os.path.join(work, 'local_%d' % round_no)))
            t_mod_s3, uploaded = timed(lambda: run_pg_backup(opts.db, os.path.join(work, 's3_%d' % round_no), bucket,
                                                             endpoint))
            for suffix, backup in (('', local), ('_s3', uploaded)):
                if backup:
                    rows['inner_dump' + suffix].append(backup['timings']['dump'])
                    rows['after_dump' + suffix].append(sum(v for k, v in backup['timings'].items() if k != 'dump'))
            t_ansible, dummy = timed(ansible_startup)
            shutil.rmtree(os.path.join(work, 'local_%d' % round_no))
            shutil.rmtree(os.path.join(work, 's3_%d' % round_no))
            for obj in admin.list_objects_v2(Bucket=bucket).get('Contents', []):
                admin.delete_object(Bucket=bucket, Key=obj['Key'])
            for key, value in (('raw_dump', t_dump), ('raw_upload', t_up), ('pg_backup', t_mod),
                               ('pg_backup_s3', t_mod_s3), ('ansible', t_ansible)):
                rows[key].append(value)
            print('round %d: pg_dump %.2fs, upload %.2fs, pg_backup %.2fs, pg_backup+S3 %.2fs, ansible ping %.2fs'
                  % (round_no, t_dump, t_up, t_mod, t_mod_s3, t_ansible), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for obj in admin.list_objects_v2(Bucket=bucket).get('Contents', []):
            admin.delete_object(Bucket=bucket, Key=obj['Key'])
        for upload in admin.list_multipart_uploads(Bucket=bucket).get('Uploads', []):
            admin.abort_multipart_upload(Bucket=bucket, Key=upload['Key'], UploadId=upload['UploadId'])
        admin.delete_bucket(Bucket=bucket)
        if proxy:
            proxy.terminate()
            proxy.wait()

    med = {k: statistics.median(v) if v else 0.0 for k, v in rows.items()}
    print()
    print('database %s: %.2f GB; custom-format dump %.1f MB; median of %d rounds; %d cores; load average %.2f before, '
          '%.2f after; S3 link: %s'
          % (opts.db, size / 1e9, dump_size / 1e6, opts.rounds, os.cpu_count(), load_before[0], os.getloadavg()[0],
             '%g Mbit/s proxy' % opts.upload_mbit if opts.upload_mbit else 'loopback moto'))
    startup = med['ansible']
    ref_s3 = med['raw_dump'] + med['raw_upload']
    print('%-38s %9s | %9s %7s | %9s %7s' % ('', 'reference', 'pg_backup', 'ratio', 'w/o start', 'ratio'))
    for label, ref, mine in (('dump (verify=list, no upload)', med['raw_dump'], med['pg_backup']),
                             ('dump + S3 upload (reference: in turn)', ref_s3, med['pg_backup_s3'])):
        if not mine:
            continue
        print('%-38s %8.2fs | %8.2fs %7.3f | %8.2fs %7.3f' % (
            label, ref, mine, mine / ref, mine - startup, (mine - startup) / ref))
    print('reference upload alone %.2fs; Ansible start-up (ansible -m ping) %.2fs, in the pg_backup column, not in '
          '"w/o start"' % (med['raw_upload'], startup))
    print("inside pg_backup: its pg_dump ran %.2fs (no upload) and %.2fs (uploading parts meanwhile); after pg_dump "
          "exited it spent %.2fs (verify, sidecars) and %.2fs (+ waiting for the last parts, sidecar object, complete, "
          "tag)" % (med['inner_dump'], med['inner_dump_s3'], med['after_dump'], med['after_dump_s3']))
    print('against pg_dump then upload: the upload alone %.2fs; pg_backup+S3 minus the raw pg_dump: %.2fs (%.2fs w/o '
          'start-up), so %.0f %% of the upload time is hidden behind the dump'
          % (med['raw_upload'], med['pg_backup_s3'] - med['raw_dump'], med['pg_backup_s3'] - startup - med['raw_dump'],
             100.0 * (1 - (med['pg_backup_s3'] - startup - med['raw_dump']) / med['raw_upload'])
             if med['raw_upload'] else 0))


if __name__ == '__main__':
    main()
