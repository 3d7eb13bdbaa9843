#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pg_backup
short_description: Take, verify, upload, prune and restore PostgreSQL backups
version_added: 0.1.0
description:
  - Takes a C(pg_dump) backup into a directory under a temporary name, fsyncs it, verifies it and only
    then gives it its final name, so a failed or killed dump never leaves a file that looks like a backup
    and never touches earlier backups.
  - Single-file formats (V(custom), V(plain), V(tar)) are streamed from C(pg_dump)'s standard output into the
    file, hashed as they pass (no second read of the archive) and, with O(s3_bucket), uploaded part by part
    while C(pg_dump) still runs.
  - Writes a C(sha256sum) sidecar and a JSON manifest beside each backup, optionally uploads it to S3, and
    keeps the newest backups per label locally and in S3.
  - "The S3 upload goes straight to the final key, without a staging key or a server-side copy. Metadata known
    when it starts (db, label, format, created, server and pg_dump versions) is object metadata. The sha256,
    known only at the end, is written as the C(<key>.sha256) sidecar object I(before) the multipart upload is
    completed, so the object never exists without a checksum that can be found, then set as the object tag
    C(sha256) (C(s3:PutObjectTagging)). A backup smaller than one part (16 MiB) is one PutObject after the
    dump, with the sha256 as real metadata; so are C(directory) backups, uploaded file by file after the dump."
  - With O(max_age), a re-run reuses a verified backup of the same label that is young enough, so retrying
    a failed deployment does not take a second production dump.
  - With O(state=restored), restores a backup (a path, an C(s3://) URI, or the newest of a label) after
    checking its checksum and archive, taking a safety backup of the target first.
  - A restore with O(clean=true) (or into a database that does not exist) goes into a new database
    C(<db>__restore_<timestamp>) with the target's owner, encoding, locale, tablespace, connection limit,
    settings, privileges and comment; only when that restore succeeded and every table the archive has data for
    is there (with the row counts the backup recorded, for V(verify=restore) backups) does it replace the target,
    in one transaction (C(ALTER DATABASE <db> RENAME TO <db>__pre_restore_<timestamp>), then the new one to
    C(<db>)). The replaced database is then dropped, or kept (see O(keep_previous)). A failed restore leaves the
    target untouched and drops the new database. Objects created since the backup (tables, materialized views
    over restored tables) are gone, as they would be after C(pg_restore --create).
options:
  state:
    description:
      - V(present) takes a backup (or reuses one, see O(max_age)).
      - V(restored) restores a backup into O(db).
    type: str
    default: present
    choices: [ present, restored ]
  dest:
    description:
      - Directory that holds the backups. Created (mode 0700) if missing.
      - With O(state=restored) it is where the newest backup of O(label) is looked for, where S3 downloads
        go, and where the safety backup is written.
    type: path
    required: true
  label:
    description:
      - A word naming why the backup exists (V(pre_migration), V(nightly)); part of the file name, and the
        unit of retention and reuse. Letters, digits, C(_) and C(-) only.
      - Backups are named C(<db>.<label>.<timestamp>.<ext>). A database name with characters other than letters,
        digits, C(_) and C(-) is written with those replaced by C(_), then C(@) and 16 hex digits of the name's
        sha256, so two databases never share a name. Retention and lookup go by the database recorded in each
        backup's manifest (backups named before this scheme are still found).
    type: str
    default: backup
  format:
    description:
      - The C(pg_dump) archive format. V(directory) is the only one that dumps in parallel (O(jobs)).
    type: str
    default: custom
    choices: [ custom, directory, plain, tar ]
  compress:
    description:
      - Compression level, 0 to 9 (gzip). Not supported by the V(tar) format. Defaults to pg_dump's choice.
    type: int
  jobs:
    description:
      - Parallel jobs for C(pg_dump) (V(directory) format only) and C(pg_restore).
      - Each job is a connection. The module reduces O(jobs), with a warning, to the connections left free by the
        server (C(max_connections), less the slots reserved for superusers, those in use and a tenth of
        C(max_connections) kept for the applications), the role's and the database's C(CONNECTION LIMIT).
        More than V(64) fails.
    type: int
    default: 1
  schemas:
    description: Dump only these schemas (C(pg_dump --schema)); patterns as pg_dump takes them.
    type: list
    elements: str
    default: []
  exclude_schemas:
    description: Do not dump these schemas (C(--exclude-schema)).
    type: list
    elements: str
    default: []
  tables:
    description: Dump only these tables (C(--table)).
    type: list
    elements: str
    default: []
  exclude_tables:
    description: Do not dump these tables (C(--exclude-table)).
    type: list
    elements: str
    default: []
  verify:
    description:
      - V(none) checks only that C(pg_dump) succeeded.
      - V(list) reads the archive's whole table of contents with C(pg_restore --list) (for V(plain),
        checks the dump's completion trailer).
      - V(restore) restores into a scratch database, compares the row count of every table with the
        source (counted in the very snapshot C(pg_dump) used) and drops the scratch database. Needs the
        C(CREATEDB) privilege.
    type: str
    default: list
    choices: [ none, list, restore ]
  keep:
    description:
      - Keep the newest O(keep) backups of this database and label, locally and in S3, and delete older
        ones. V(0) keeps everything. The backup just made or reused is never deleted.
      - Only complete backups (both sidecars, verification passed) count and are deleted. A backup that another
        run reported after this run started is never deleted, so two runs at once cannot prune each other's.
    type: int
    default: 0
  max_age:
    description:
      - Reuse a verified backup of this database and label younger than this (V(30m), V(2h), V(1h30m),
        V(1d), or seconds) instead of taking a new one; the task then reports no change unless it had to
        upload the reused backup.
      - With O(s3_bucket), the reused backup is uploaded again unless S3 holds it with the same recorded sha256
        (metadata, tag or sidecar).
      - Age alone cannot tell a re-run from the next deployment, which may follow within minutes after migrations
        and writes; give O(reuse_key) so that only a backup taken for the same purpose is reused.
    type: str
  reuse_key:
    description:
      - What the backup is for, such as the version being deployed. It is recorded in the manifest, and with
        O(max_age) only a backup recorded with the same key is reused, so that a re-run of one deployment reuses
        its backup while the next deployment takes its own (reusing the previous deployment's would restore a
        database from before that deployment's migrations and writes).
      - Unset, any backup of the label young enough is reused.
    type: str
    version_added: 0.1.0
  progress_file:
    description:
      - A file the module rewrites every second (atomically, mode 0600) while it takes a backup, for a caller that
        prints heartbeats (the backup role runs the module with C(async) and runbook.deploy.await_job reads it).
      - A JSON object with C(phase) (C(dump), C(verify), C(upload)), C(bytes) (the size of the archive written so
        far) and C(elapsed_s). The module removes it when it ends.
    type: path
  pg_bin_dir:
    description:
      - Directory with C(pg_dump), C(pg_restore) and C(psql).
      - By default they come from C(PATH); if that C(pg_dump) is older than the server, the module looks
        in C(/usr/lib/postgresql/<server major>/bin) and C(/usr/pgsql-<server major>/bin).
    type: path
  src:
    description:
      - With O(state=restored), the backup to restore, a local path or C(s3://bucket/key).
      - Without it, the newest verified backup of O(source_db) and O(label) is restored, from O(dest) or,
        if newer there, from O(s3_bucket).
    type: str
  source_db:
    description:
      - With O(state=restored) and no O(src), whose backups to look for. Defaults to O(db).
    type: str
  checksum:
    description:
      - With O(state=restored), the sha256 the backup must have. Defaults to the recorded one. Locally, the
        C(.sha256) sidecar file. In S3, the object's C(sha256) metadata, else its C(sha256) tag, else its
        C(<key>.sha256) sidecar object; when these disagree the restore is refused unless this option is given.
        A backup without any recorded checksum is refused unless this is V(skip).
    type: str
  clean:
    description:
      - With O(state=restored), make the target exactly what the backup holds. The backup is restored into a
        new database that then replaces the target (see the description). This needs the C(CREATEDB)
        privilege and membership in the target's owner role (being the owner is enough; no superuser), C(CREATE)
        on the target's tablespace only when it is not the default one, and C(CREATEROLE) only when other roles
        have settings in the target. These are checked before anything changes (the safety backup included);
        what is missing is named in the error. Only the properties that differ from C(template0)'s are given to
        C(CREATE DATABASE). With other sessions connected it needs O(terminate_sessions).
      - Without it, the archive is restored into the existing database as it is (in one transaction with
        O(jobs=1)); that fails when the database already has the archive's objects.
    type: bool
    default: false
  keep_previous:
    description:
      - With O(state=restored) and O(clean=true), keep the database the restore replaced, renamed
        C(<db>__pre_restore_<timestamp>) (returned as RV(restore.previous_db)), instead of dropping it.
      - By default it is dropped when O(safety_backup=true) (the safety backup holds what it had) and kept
        when O(safety_backup=false), so a restore never destroys data that was not backed up unless asked to.
    type: bool
  no_owner:
    description:
      - With O(state=restored) and O(verify=restore), do not restore object ownership and privileges
        (C(--no-owner --no-acl)); use it when the restoring user cannot take on the original owners.
    type: bool
    default: false
  safety_backup:
    description:
      - With O(state=restored), first back up the target database into O(dest) with label V(pre_restore)
        when it exists and holds tables.
    type: bool
    default: true
  terminate_sessions:
    description:
      - With O(state=restored), terminate other sessions connected to the target database. Without it
        the module refuses to restore while other sessions are connected, and lists them.
    type: bool
    default: false
  maintenance_db:
    description:
      - Database to connect to for creating and dropping databases (the scratch database of O(verify=restore),
        a missing restore target).
    type: str
    default: postgres
extends_documentation_fragment:
  - runbook.deploy.postgres
  - runbook.deploy.s3
attributes:
  check_mode:
    support: full
    description: Connects and reads (server version, existing backups, S3 listing) but writes nothing.
  diff_mode:
    support: none
    description: Backups and restores have no before/after text worth showing; the result lists what changed.
notes:
  - O(state=restored) always reports a change when it restores, because a restore is an action, like
    M(ansible.builtin.command). Guard it with C(when) in playbooks.
  - With O(clean=true) a failed restore never touches the target. Without it, O(jobs) greater than 1 cannot run in
    a single transaction, so a failure halfway can leave the target half-restored (the safety backup taken before
    it is the way back); with O(jobs=1) the whole restore is one transaction and a failure leaves the target as it
    was.
  - A custom-format archive streamed from C(pg_dump)'s standard output has no data offsets in its table of
    contents; C(pg_restore --list) reads it whole, and C(pg_restore --jobs) finds the data by scanning (checked
    with PostgreSQL 15).
  - Directory-format backups are uploaded file by file under C(<prefix>/<name>/) after the dump; single-file
    formats are uploaded while C(pg_dump) writes them. Uploading needs C(s3:PutObject), C(s3:PutObjectTagging)
    and C(s3:AbortMultipartUpload); restoring and reusing need C(s3:GetObject) and C(s3:GetObjectTagging). If
    tagging is denied the task warns and the checksum stays in the sidecar object.
  - Passwords reach C(pg_dump), C(pg_restore) and C(psql) in C(PGPASSWORD), in the environment of those processes
    only (which get no other variable of the module's environment than the basics), never through their command
    line and never in a file, so a killed module leaves no password on disk.
  - A database name (O(db), O(source_db), the name in O(db_url)) is always a name, never a connection string. The
    tools get it in C(PGDATABASE) or as a quoted C(dbname='...') value.
  - A backup takes its final name only after its C(.sha256) and C(.json) sidecars are written; a failure before
    (a full disk) leaves only hidden C(.partial.*) files, which the next run removes.
  - If the module is killed, a hidden C(.partial.*) file may stay in O(dest); the next run removes it. An
    aborted S3 multipart upload may stay too; an S3 lifecycle rule for incomplete multipart uploads removes those.
requirements:
  - The PostgreSQL client tools (C(pg_dump), C(pg_restore), C(psql)) of the server's major version or newer.
seealso:
  - module: community.postgresql.postgresql_db
    description: Creates, drops, dumps and restores databases, without verification, checksums, upload or retention.
  - name: pg_dump
    description: PostgreSQL's documentation of pg_dump.
    link: https://www.postgresql.org/docs/current/app-pgdump.html
author:
  - runbook.deploy contributors (@runbook-deploy)
'''

EXAMPLES = r'''
- name: Back up production before migrating, reusing a backup taken in the last 30 minutes
  runbook.deploy.pg_backup:
    db_url: "{{ database_url }}"
    dest: /var/backups/postgres
    label: pre_migration
    max_age: 30m
    keep: 5
    s3_bucket: acme-backups
    s3_prefix: production/postgres
    s3_encryption: AES256
  register: pre_migration_backup

- name: Parallel directory-format backup, verified by a full restore into a scratch database
  runbook.deploy.pg_backup:
    login_host: db.internal
    login_user: backup
    login_password: "{{ vault_backup_password }}"
    db: app
    dest: /srv/backups
    format: directory
    jobs: 4
    verify: restore

- name: Make the database exactly the backup taken before this deployment, terminating the app's sessions
  runbook.deploy.pg_backup:
    state: restored
    db_url: "{{ database_url }}"
    dest: /var/backups/postgres
    src: "{{ pre_migration_backup.backup.s3_uri }}"
    clean: true
    terminate_sessions: true

- name: Restore the newest nightly backup of production into a staging copy
  runbook.deploy.pg_backup:
    state: restored
    db: app_staging_copy
    source_db: app
    label: nightly
    dest: /var/backups/postgres
    s3_bucket: acme-backups
    s3_prefix: production/postgres
'''

RETURN = r'''
backup:
  description: The backup taken, reused or (with O(state=restored)) restored.
  returned: success
  type: dict
  contains:
    path:
      description: Local path of the backup (a directory for the V(directory) format).
      type: str
      sample: /var/backups/postgres/app.pre_migration.20261122T135500Z.dump
    name:
      description: File name of the backup.
      type: str
      sample: app.pre_migration.20261122T135500Z.dump
    db:
      description: Database the backup is of.
      type: str
      sample: app
    label:
      description: The backup's label.
      type: str
      sample: pre_migration
    format:
      description: Archive format.
      type: str
      sample: custom
    size:
      description: Size in bytes (all files, for the V(directory) format).
      type: int
      sample: 104857600
    sha256:
      description: sha256 of the archive (for V(directory), of its C(.sha256) sidecar, which lists every file).
      type: str
      sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    checksum_file:
      description: Path of the C(sha256sum) sidecar.
      type: str
      sample: /var/backups/postgres/app.pre_migration.20261122T135500Z.dump.sha256
    created:
      description: When the backup was taken, UTC, ISO 8601.
      type: str
      sample: '2026-11-22T13:55:00+00:00'
    duration:
      description: Seconds the dump, verification and upload took (0 for a reused backup).
      type: float
      sample: 42.1
    dump_duration:
      description: Seconds C(pg_dump) ran.
      type: float
      sample: 38.4
    timings:
      description:
        - Seconds per phase after the dump started. C(dump) includes hashing and the S3 parts uploaded while
          pg_dump wrote; C(checksum) is the sha256 pass of a V(directory) backup (single-file formats are hashed
          while streamed); C(upload_wait) waits for parts still going up; C(upload_finish) writes the sidecar
          object, completes the upload and tags it (or uploads a small or V(directory) backup).
      type: dict
      sample: {"dump": 38.4, "verify": 0.2, "upload_wait": 0.1, "upload_finish": 1.9}
    reused:
      description: Whether an existing backup younger than O(max_age) was reused.
      type: bool
      sample: false
    s3_uri:
      description: Where the backup is in S3, when uploaded.
      type: str
      sample: s3://acme-backups/production/postgres/app.pre_migration.20261122T135500Z.dump
    verification:
      description: The verification result.
      type: dict
      contains:
        mode:
          description: The O(verify) mode used.
          type: str
          sample: list
        passed:
          description: Whether verification passed (a failed verification fails the task).
          type: bool
          sample: true
        toc_entries:
          description: Entries in the archive's table of contents (V(list) and V(restore), non-plain formats).
          type: int
          sample: 125
        empty_database:
          description:
            - Present and true when the database held no object to dump (a database only created, before its
              first migration). Its archive has an empty table of contents, which is then a valid backup.
          type: bool
          returned: when the archive's table of contents is empty
          sample: true
        row_counts:
          description: Rows per table, C(schema.table), in the source snapshot (V(restore) only).
          type: dict
          sample: {"public.users": 1200}
    server_version:
      description: Server version, major.minor.
      type: str
      sample: '15.18'
    pg_dump_version:
      description: Major version of the pg_dump used.
      type: int
      sample: 15
restore:
  description: What the restore did (O(state=restored)).
  returned: state=restored
  type: dict
  contains:
    target_db:
      description: The database restored into.
      type: str
      sample: app
    source:
      description: The backup restored, a path or C(s3://) URI.
      type: str
      sample: s3://acme-backups/production/postgres/app.pre_migration.20261122T135500Z.dump
    checksum_verified:
      description: Whether the archive's sha256 matched the recorded one.
      type: bool
      sample: true
    single_transaction:
      description: Whether the restore ran in one transaction (all or nothing).
      type: bool
      sample: true
    created_database:
      description: Whether the target database had to be created.
      type: bool
      sample: false
    terminated_sessions:
      description: PIDs of the sessions terminated first (O(terminate_sessions)).
      type: list
      elements: int
      sample: [4242]
    safety_backup:
      description: The backup of the target taken first (same keys as RV(backup)), or null.
      type: dict
      sample: {"path": "/var/backups/postgres/app.pre_restore.20261122T140000Z.dump"}
    row_counts:
      description: Rows per table of the target after the restore.
      type: dict
      sample: {"public.users": 1200}
    method:
      description:
        - V(swap) restored into a new database that replaced (or became) the target; V(in_place) restored into
          the existing database (O(clean=false)).
      type: str
      sample: swap
    scratch_db:
      description: The database restored into before it took the target's name (V(swap) only), else null.
      type: str
      sample: app__restore_20261122t140000z
    previous_db:
      description: The replaced database, when kept (O(keep_previous)), else null.
      type: str
      sample: app__pre_restore_20261122t140000z
    previous_db_dropped:
      description: Whether the replaced database was dropped.
      type: bool
      sample: true
    duration:
      description: Seconds the restore took.
      type: float
      sample: 12.5
removed:
  description: Backups deleted by retention (O(keep)), local paths and C(s3://) URIs, and leftovers of killed runs.
  returned: always
  type: list
  elements: str
  sample: [/var/backups/postgres/app.pre_migration.20261101T020000Z.dump]
executed_commands:
  description: The commands run, in order. They never contain a password (passwords go through the environment).
  returned: always
  type: list
  elements: str
  sample: ["/usr/bin/pg_dump --format=custom --no-password"]
'''

import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.runbook.deploy.plugins.module_utils import backup_catalog as catalog
from ansible_collections.runbook.deploy.plugins.module_utils import postgres as pg
from ansible_collections.runbook.deploy.plugins.module_utils import progress
from ansible_collections.runbook.deploy.plugins.module_utils import s3
from ansible_collections.runbook.deploy.plugins.module_utils.command import (
    CommandError, CommandRunner, PrivateWorkspace, child_environment, find_tool, last_lines, tool_major_version)

PLAIN_TRAILER = b'-- PostgreSQL database dump complete'
PLAIN_CREATE_PUBLIC = b'\nCREATE SCHEMA public;\n'
SYSTEM_PG_DIRS = ('/usr/lib/postgresql/%d/bin', '/usr/pgsql-%d/bin')
# What the safety backup before a restore is, whatever the task asked of its own backups.
SAFETY_BACKUP_OPTIONS = dict(format='custom', verify='list', keep=0, max_age=None, compress=None, schemas=[],
                             exclude_schemas=[], tables=[], exclude_tables=[], s3_bucket=None, jobs=1)


class BackupError(Exception):
    """A pg_backup step failed; the message is ready for fail_json."""


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def derived_name(base, suffix):
    """base + suffix within PostgreSQL's 63-byte identifiers (base is shortened)."""
    room = 63 - len(suffix.encode('utf-8'))
    return base.encode('utf-8')[:room].decode('utf-8', 'ignore') + suffix


class Tools(object):
    """pg_dump / pg_restore / psql of a suitable major version."""

    def __init__(self, runner, bin_dir, server_major):
        self.runner = runner
        self.bin_dir = self._choose_dir(bin_dir, server_major)

    def _choose_dir(self, bin_dir, server_major):
        path = find_tool('pg_dump', bin_dir)
        if not path:
            where = "pg_bin_dir '%s'" % bin_dir if bin_dir else 'PATH'
            raise BackupError('pg_dump was not found in %s; install the PostgreSQL client tools '
                              '(postgresql-client-%d) or set pg_bin_dir' % (where, server_major))
        self.dump_major = tool_major_version(self.runner, path)
        if self.dump_major is None:
            raise BackupError("'%s --version' did not report a PostgreSQL version" % path)
        if self.dump_major >= server_major:
            return os.path.dirname(path)
        if not bin_dir:
            for pattern in SYSTEM_PG_DIRS:
                candidate = pattern % server_major
                if os.access(os.path.join(candidate, 'pg_dump'), os.X_OK):
                    self.dump_major = server_major
                    return candidate
        raise BackupError('pg_dump %d (%s) is older than the PostgreSQL %d server and cannot dump it; install '
                          'postgresql-client-%d or newer and point pg_bin_dir at it'
                          % (self.dump_major, path, server_major, server_major))

    def path(self, name):
        found = find_tool(name, self.bin_dir)
        if not found:
            raise BackupError('%s was not found in %s, beside pg_dump' % (name, self.bin_dir))
        return found


class PgBackup(object):
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.runner = CommandRunner(module)
        self.removed = []
        self.reporter = None
        self.conn = None
        self.env = None
        self.tools = None
        self.server_version = None
        self.s3 = None
        # Retention never deletes a backup another run reported after this one started (see apply_retention).
        self.started = utcnow()

    @contextlib.contextmanager
    def options(self, **values):
        """Run with these options in place of the task's (module.params stays untouched)."""
        saved = self.params
        self.params = dict(saved, **values)
        try:
            yield
        finally:
            self.params = saved

    # -- set-up --------------------------------------------------------------------------
    def validate(self):
        p = self.params
        if not catalog.LABEL_RE.match(p['label']):
            raise BackupError("label '%s' may contain only letters, digits, '_' and '-' (at most 64)" % p['label'])
        if p['compress'] is not None and not 0 <= p['compress'] <= 9:
            raise BackupError('compress must be between 0 and 9, not %d' % p['compress'])
        if p['compress'] and p['format'] == 'tar':
            raise BackupError('compress is not supported by the tar format; use format=custom or directory')
        if p['jobs'] < 1:
            raise BackupError('jobs must be 1 or more, not %d' % p['jobs'])
        if p['jobs'] > pg.MAX_JOBS:
            raise BackupError('jobs=%d is more than pg_backup ever runs (at most %d): each job is a connection to the '
                              'server; set jobs to the number of CPU cores the server can spare'
                              % (p['jobs'], pg.MAX_JOBS))
        if p['jobs'] > 1 and p['format'] != 'directory' and p['state'] == 'present':
            raise BackupError('jobs > 1 needs format=directory: pg_dump dumps in parallel only into a directory')
        if p['keep'] < 0:
            raise BackupError('keep must be 0 (keep all) or more, not %d' % p['keep'])
        if p['max_age'] is not None:
            try:
                self.max_age = catalog.parse_duration(p['max_age'])
            except ValueError:
                raise BackupError("max_age '%s' is not a duration; use e.g. 30m, 2h, 1h30m, 1d or seconds" % p['max_age'])
        if p['s3_retries'] < 1:
            raise BackupError('s3_retries must be 1 or more')
        if p['checksum'] and p['checksum'] != 'skip' and not re.match(r'^[0-9a-fA-F]{64}$', p['checksum']):
            raise BackupError("checksum must be a sha256 hex digest (64 hex digits) or 'skip'")
        if p['src'] and p['src'].startswith('s3://'):
            s3.parse_s3_uri(p['src'])
        if (p['s3_bucket'] or (p['src'] or '').startswith('s3://')) and not s3.HAS_BOTO3:
            self.module.fail_json(msg=missing_required_lib('boto3'))
        if not pg.HAS_PSYCOPG2:
            self.module.fail_json(msg=missing_required_lib('psycopg2'))
        self.conn = pg.connection_from_params(p)

    def prepare(self, workspace):
        # The password goes into PGPASSWORD in the environment of each tool's process only (child_environment):
        # no passfile, so a killed module leaves nothing with the password on disk.
        self.env = pg.libpq_environment(self.conn)
        connection = pg.connect(self.conn, dbname=self.params['maintenance_db']
                                if self.params['state'] == 'restored' else None)
        try:
            self.server_version = pg.server_version(connection)
            if self.params['jobs'] > 1:
                self.bound_jobs(connection)
        finally:
            connection.close()
        self.tools = Tools(self.runner, self.params['pg_bin_dir'], self.server_version[0])
        if self.params['s3_bucket'] or (self.params['src'] or '').startswith('s3://'):
            self.s3 = s3.s3_client(self.params)

    def bound_jobs(self, connection):
        """Reduce jobs to the connections the server, the role and the database leave free (with a warning):
        pg_dump and pg_restore open one connection per job and fail, or starve the applications, beyond that."""
        p = self.params
        dbname = None
        if p['state'] == 'restored' and pg.database_exists(connection, self.conn['dbname']):
            dbname = self.conn['dbname']
        free, detail = pg.free_connections(connection, dbname)
        # pg_dump's (or pg_restore's) leader connection, and our own snapshot connection with verify=restore.
        extra = 2 if p['verify'] == 'restore' and p['state'] == 'present' else 1
        jobs = pg.bound_jobs(p['jobs'], free, extra)
        if jobs < p['jobs']:
            self.module.warn('jobs=%d reduced to %d, as each job is a connection: %s leaves room for %d more'
                             % (p['jobs'], jobs, detail, max(free, 0)))
            self.params = dict(p, jobs=jobs)

    def ensure_dest(self):
        dest = self.params['dest']
        if os.path.exists(dest) and not os.path.isdir(dest):
            raise BackupError("dest '%s' exists and is not a directory" % dest)
        if not os.path.exists(dest):
            if self.module.check_mode:
                return False
            try:
                os.makedirs(dest, 0o700)
            except OSError as exc:
                raise BackupError("cannot create dest '%s': %s" % (dest, exc.strerror))
        if not os.access(dest, os.W_OK | os.X_OK) and not self.module.check_mode:
            raise BackupError("dest '%s' is not writable by %s; fix its permissions or choose another dest"
                              % (dest, os.environ.get('USER', 'this user')))
        return True

    # -- backup ---------------------------------------------------------------------------
    def backup(self, dbname, label, allow_reuse=True):
        """Take (or reuse) a backup of dbname; return (changed, backup dict)."""
        p = self.params
        dest = p['dest']
        if not self.ensure_dest():
            return True, self.planned(dbname, label)
        with catalog.DestLock(dest, create=not self.module.check_mode):
            if not self.module.check_mode:
                self.removed.extend(catalog.remove_partials(dest))
            existing = catalog.local_backups(dest, dbname, label)
            reused = self.find_reusable(existing) if allow_reuse else None
            if reused:
                changed, result = self.reuse(reused)
            elif self.module.check_mode:
                result, changed = self.planned(dbname, label, existing), True
            else:
                result = self.dump(dbname, label, existing)
                changed = True
            changed = self.apply_retention(dbname, label, result['name'], planned=result.get('planned', False)) or changed
            if not self.module.check_mode:
                # Mark the backup as reported now, while the lock is held: a run that started before this moment
                # (and waits for the lock) must not prune it (see apply_retention).
                catalog.touch(result['path'])
        return changed, result

    def planned(self, dbname, label, existing=()):
        name = catalog.backup_name(dbname, label, self.params['format'], self.params['compress'], utcnow(),
                                   taken=catalog.names_in(self.params['dest'], existing))
        result = dict(path=os.path.join(self.params['dest'], name), name=name, db=dbname, label=label,
                      format=self.params['format'], reused=False, planned=True)
        if self.params['s3_bucket']:
            result['s3_uri'] = self.s3_uri(name)
        return result

    def find_reusable(self, existing):
        if self.params['max_age'] is None:
            return None
        now = utcnow()
        for info in existing:
            manifest = info['manifest']
            if not info['complete']:
                continue
            if manifest.get('format') != self.params['format']:
                continue
            if self.params['reuse_key'] is not None and manifest.get('reuse_key') != self.params['reuse_key']:
                continue  # taken for another purpose (another deployment): never this run's backup
            age = (now - info['created']).total_seconds()
            if 0 <= age <= self.max_age:
                return info
            return None  # the newest verified backup is too old
        return None

    def reuse(self, info):
        manifest = dict(info['manifest'])
        manifest.update(reused=True, duration=0.0, path=info['path'])
        changed = False
        if self.params['s3_bucket'] and not self.uploaded(info['name'], manifest):
            changed = True
            if not self.module.check_mode:
                manifest['s3_uri'] = self.upload_finished(info['path'], manifest)
                catalog.write_manifest(info['path'], dict(manifest, reused=False))
        return changed, manifest

    def uploaded(self, name, manifest):
        """Whether the backup is in S3 under this task's bucket and prefix with its recorded checksum."""
        if manifest.get('s3_uri') != self.s3_uri(name):
            return False
        if manifest.get('format') == 'directory':
            return True  # uploaded file by file after the dump, each with the checksum as metadata
        key = s3.join_key(self.params['s3_prefix'], name)
        if not s3.exists(self.s3, self.params['s3_bucket'], key):
            return False
        found = s3.recorded_checksums(self.s3, self.params['s3_bucket'], key)
        return bool(found) and set(found.values()) == {manifest['sha256']}

    def s3_uri(self, name):
        return 's3://%s/%s' % (self.params['s3_bucket'], s3.join_key(self.params['s3_prefix'], name))

    def dump_argv(self, target, snapshot=None):
        """pg_dump's command line; target None writes the archive to stdout."""
        p = self.params
        argv = [self.tools.path('pg_dump'), '--format=%s' % p['format']]
        if target:
            argv.append('--file=%s' % target)
        argv.append('--no-password')
        if p['format'] == 'directory' and p['jobs'] > 1:
            argv.append('--jobs=%d' % p['jobs'])
        if p['compress'] is not None:
            argv.append('--compress=%d' % p['compress'])
        if snapshot:
            argv.append('--snapshot=%s' % snapshot)
        for option, values in (('--schema', p['schemas']), ('--exclude-schema', p['exclude_schemas']),
                               ('--table', p['tables']), ('--exclude-table', p['exclude_tables'])):
            argv.extend('%s=%s' % (option, value) for value in values)
        return argv

    def upload_metadata(self, name, dbname, label, created):
        """Object metadata known before the dump starts (the sha256 comes at the end, as sidecar and tag)."""
        return {'db': dbname, 'label': label, 'format': self.params['format'], 'created': created.isoformat(),
                'name': name, 'server-version': '%d.%d' % self.server_version, 'pg-dump-version': str(self.tools.dump_major)}

    def dump(self, dbname, label, existing):
        with progress.Reporter(self.params['progress_file'], lambda: 0) as self.reporter:
            return self.dump_reported(dbname, label, existing)

    def dump_reported(self, dbname, label, existing):
        p = self.params
        dest = p['dest']
        started = time.time()
        created = utcnow()
        name = catalog.backup_name(dbname, label, p['format'], p['compress'], created,
                                   taken=catalog.names_in(dest, existing))
        final = os.path.join(dest, name)
        partial = catalog.partial_path(dest, name)
        env = dict(self.env, PGDATABASE=dbname)
        streamed = p['format'] != 'directory'
        snapshot_conn = None
        uploader = None
        upload_error = None
        written = [0]

        def measure():
            # The archive keeps its size once renamed: the largest size seen is the size written.
            written[0] = max(written[0], progress.tree_size(partial))
            return written[0]

        self.reporter.measure = measure
        self.reporter.phase = 'dump'
        try:
            snapshot = None
            if p['verify'] == 'restore':
                # Count rows in the very snapshot pg_dump reads, so the comparison is exact on a live database.
                snapshot_conn = pg.connect(self.conn, dbname=dbname, autocommit=False)
                snapshot_conn.set_session(isolation_level='REPEATABLE READ', readonly=True)
                snapshot = pg.query_all(snapshot_conn, 'SELECT pg_export_snapshot()')[0][0]
            if p['s3_bucket'] and streamed:
                uploader = s3.StreamingUpload(
                    self.s3, p['s3_bucket'], s3.join_key(p['s3_prefix'], name), partial,
                    s3.choose_part_size(self.database_size(dbname)),
                    self.upload_metadata(name, dbname, label, created), s3.write_args(p))
            dump_started = time.time()
            timings = {}
            if streamed:
                sha256, size = self.stream_dump(self.dump_argv(None, snapshot), env, partial, uploader, dest)
                checksum_text = '%s  %s\n' % (sha256, name)
                dump_duration = time.time() - dump_started
                timings['dump'] = round(dump_duration, 3)
            else:
                rc, out, err = self.runner.run(self.dump_argv(partial, snapshot), env=env)
                dump_duration = time.time() - dump_started
                if rc != 0:
                    raise BackupError(self.explain_dump_failure(rc, err or out, dest))
                catalog.fsync_path(partial)
                timings['dump'] = round(dump_duration, 3)
                mark = time.time()
                checksum_text, sha256 = catalog.checksum_lines(partial, p['format'], name)
                size = catalog.backup_size(partial)
                timings['checksum'] = round(time.time() - mark, 3)
            mark = time.time()
            self.reporter.phase = 'verify'
            verification = self.verify(partial, p['format'], p['verify'], dbname, snapshot_conn)
            timings['verify'] = round(time.time() - mark, 3)
            if uploader or p['s3_bucket']:
                self.reporter.phase = 'upload'
            if uploader:
                # Parts may still be going up (a link slower than pg_dump): wait for them now.
                mark = time.time()
                try:
                    multipart = uploader.finish(size)
                except s3.S3Error as exc:
                    # The upload failed, the dump did not: keep going and keep the local backup.
                    upload_error = exc
                    uploader.abort()
                    uploader = None
                timings['upload_wait'] = round(time.time() - mark, 3)
            manifest = dict(
                name=name, path=final, db=dbname, label=label, format=p['format'], compress=p['compress'],
                created=created.isoformat(), size=size, sha256=sha256, checksum_file=final + '.sha256',
                verification=verification, server_version='%d.%d' % self.server_version,
                pg_dump_version=self.tools.dump_major, dump_duration=round(dump_duration, 3), reused=False,
                timings=timings, reuse_key=p['reuse_key'])
            self.publish(partial, final, checksum_text, manifest)
        except Exception:
            if uploader:
                uploader.abort()
            self.discard(partial)
            raise
        finally:
            if snapshot_conn is not None:
                snapshot_conn.close()
        if upload_error:
            raise BackupError('%s; the verified local backup is kept at %s' % (upload_error, final))
        if p['s3_bucket']:
            mark = time.time()
            try:
                if uploader:
                    manifest['s3_uri'] = self.finish_streamed_upload(uploader, multipart, manifest)
                else:
                    manifest['s3_uri'] = self.upload_finished(final, manifest)
            except s3.S3Error as exc:
                if uploader:
                    uploader.abort()
                raise BackupError('%s; the verified local backup is kept at %s' % (exc, final))
            timings['upload_finish'] = round(time.time() - mark, 3)
            try:
                catalog.write_manifest(final, manifest)
            except OSError as exc:
                raise BackupError("the backup %s is complete and uploaded to %s, but its manifest could not be updated "
                                  "with the S3 location (%s); free space in dest '%s'"
                                  % (final, manifest['s3_uri'], exc.strerror or exc, dest))
        manifest['duration'] = round(time.time() - started, 3)
        return manifest

    def publish(self, partial, final, checksum_text, manifest):
        """Give a verified backup its final name: both sidecars first (under hidden partial names, then renamed),
        the archive last, so a backup under a final name always has its .sha256 and .json.  A failure (the disk
        fills up writing a sidecar) leaves nothing under a backup name."""
        dest = os.path.dirname(final)
        renamed = []
        try:
            catalog.write_checksum(partial, checksum_text)
            catalog.write_manifest(partial, manifest)
            for suffix in ('.sha256', '.json'):
                os.rename(partial + suffix, final + suffix)
                renamed.append(final + suffix)
            os.rename(partial, final)
            catalog.fsync_dir(dest)
        except OSError as exc:
            hidden = [os.path.join(dest, catalog.PARTIAL_PREFIX + os.path.basename(partial) + suffix)
                      for suffix in ('.sha256', '.json')]  # write_atomically's own temporary files
            for path in renamed + [partial + '.sha256', partial + '.json'] + hidden:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            if exc.errno == errno.ENOSPC:
                raise BackupError("cannot finish the backup: dest '%s' is full (No space left on device) while writing "
                                  "its checksum and manifest; free space or choose another dest. Nothing was left under "
                                  "a backup name and earlier backups are untouched" % dest)
            raise BackupError("cannot finish the backup in dest '%s': %s (%s); nothing was left under a backup name and "
                              "earlier backups are untouched" % (dest, exc.strerror or exc, exc.filename or final))

    def stream_dump(self, argv, env, partial, uploader, dest):
        """Run pg_dump writing to stdout; copy its output into partial, hashing it and feeding the S3 upload
        as it comes (no second read of the archive); fsync.  Return (sha256 hex, size)."""
        self.runner.record(argv)
        # Only what pg_dump needs (the password among it): never the module's whole environment.
        full_env = child_environment(dict(env, LC_MESSAGES='C'))
        try:
            rc, text, sha256, size, write_error = catalog.write_command_output(
                [str(a) for a in argv], full_env, partial, os.path.join(self.workspace.path, 'pg_dump.stderr'),
                on_progress=uploader.written if uploader else None)
        except OSError as exc:
            raise BackupError('cannot run %s: %s' % (argv[0], exc))
        if write_error is not None:
            raise BackupError(self.explain_dump_failure(rc, '%s: %s' % (partial, write_error.strerror), dest))
        if rc != 0:
            raise BackupError(self.explain_dump_failure(rc, text, dest))
        return sha256, size

    def database_size(self, dbname):
        connection = pg.connect(self.conn, dbname=dbname)
        try:
            return pg.query_all(connection, 'SELECT pg_database_size(current_database())')[0][0]
        finally:
            connection.close()

    def explain_dump_failure(self, rc, text, dest):
        detail = last_lines(text)
        if 'No space left on device' in text:
            return ("pg_dump failed: dest '%s' is full (No space left on device); free space or choose another dest. "
                    "Nothing was left under a backup name and earlier backups are untouched. pg_dump said: %s"
                    % (dest, detail))
        if 'server version mismatch' in text:
            return 'pg_dump is older than the server: %s; set pg_bin_dir to a newer client' % detail
        if rc < 0:
            return 'pg_dump was killed by signal %d before it finished; no backup was kept. %s' % (-rc, detail)
        return 'pg_dump failed (exit code %d): %s' % (rc, detail)

    def discard(self, path):
        if os.path.lexists(path):
            catalog.remove_backup(path)

    # -- verification ---------------------------------------------------------------------
    def verify(self, path, fmt, mode, dbname, snapshot_conn):
        result = dict(mode=mode, passed=True)
        if mode == 'none':
            return result
        creates_public = False
        if fmt == 'plain':
            creates_public = self.scan_plain(path)
            data_tables = None
        else:
            result['toc_entries'], data_tables = self.list_archive(path)
            if result['toc_entries'] == 0:
                # An empty table of contents is the archive of a database that holds nothing yet (a first
                # deployment's); of any other database it is a broken archive.
                if not self.holds_nothing(dbname, snapshot_conn):
                    raise BackupError('verification failed: the archive %s has an empty table of contents, but the '
                                      'database %s is not empty' % (path, dbname))
                result['empty_database'] = True
        if mode == 'restore':
            result.update(self.verify_by_restore(path, fmt, dbname, snapshot_conn, data_tables, creates_public))
        return result

    def list_archive(self, path):
        """Read the archive's whole table of contents; return (entries, [(schema, table)] with data)."""
        rc, out, err = self.runner.run([self.tools.path('pg_restore'), '--list', path])
        if rc != 0:
            raise BackupError('verification failed: pg_restore --list cannot read %s: %s' % (path, last_lines(err or out)))
        entries = 0
        tables = []
        for line in out.splitlines():
            if not line.strip() or line.startswith(';'):
                continue
            entries += 1
            match = re.match(r'^\d+;\s*\d+\s+\d+\s+TABLE DATA\s+(\S+)\s+(\S+)\s', line)
            if match:
                tables.append((match.group(1), match.group(2)))
        return entries, tables

    def holds_nothing(self, dbname, snapshot_conn):
        """Whether the database has no object pg_dump would write (read in the dump's snapshot when there is one)."""
        if snapshot_conn is not None:
            return pg.dumpable_objects(snapshot_conn) == 0
        connection = pg.connect(self.conn, dbname=dbname)
        try:
            return pg.dumpable_objects(connection) == 0
        finally:
            connection.close()

    def scan_plain(self, path):
        """Read a plain dump once: fail unless it ends with pg_dump's completion line; return whether it
        re-creates the public schema (a dump limited with --schema=public does)."""
        import gzip
        opener = gzip.open if path.endswith('.gz') else open
        tail = b''
        creates_public = False
        try:
            with opener(path, 'rb') as handle:
                while True:
                    chunk = handle.read(1024 * 1024)
                    if not chunk:
                        break
                    window = tail + chunk
                    creates_public = creates_public or PLAIN_CREATE_PUBLIC in window
                    tail = window[-4096:]
        except (OSError, EOFError) as exc:
            raise BackupError('verification failed: cannot read %s: %s' % (path, exc))
        if PLAIN_TRAILER not in tail:
            raise BackupError("verification failed: %s does not end with pg_dump's completion line; it is truncated"
                              % path)
        return creates_public

    def verify_by_restore(self, path, fmt, dbname, snapshot_conn, data_tables, creates_public):
        scratch = 'pgbackup_verify_%s_%d' % (catalog.safe_db_name(dbname)[:30].lower(), os.getpid())
        admin = pg.connect(self.conn, dbname=self.params['maintenance_db'])
        try:
            try:
                with admin.cursor() as cursor:
                    cursor.execute('DROP DATABASE IF EXISTS %s' % pg.quote_ident(admin, scratch))
                    cursor.execute('CREATE DATABASE %s' % pg.quote_ident(admin, scratch))
            except pg.psycopg2.Error as exc:
                raise BackupError('verify=restore cannot create the scratch database %s: %s (the user needs CREATEDB; '
                                  'or use verify=list)' % (scratch, str(exc).strip()))
            try:
                scratch_conn = pg.connect(self.conn, dbname=scratch)
                try:
                    if creates_public:
                        # A dump limited with --schema=public re-creates the schema every new database has.
                        with scratch_conn.cursor() as cursor:
                            cursor.execute('DROP SCHEMA public')
                    # --clean --if-exists lets a --schema=public archive re-create the public schema.
                    self.restore_into(path, fmt, scratch, clean=fmt != 'plain', single_transaction=False,
                                      jobs=self.params['jobs'], no_owner=True)
                    tables = data_tables if data_tables is not None else pg.user_tables(scratch_conn)
                    restored = pg.row_counts(scratch_conn, tables)
                finally:
                    scratch_conn.close()
            finally:
                with admin.cursor() as cursor:
                    cursor.execute('DROP DATABASE IF EXISTS %s' % pg.quote_ident(admin, scratch))
        finally:
            admin.close()
        source = pg.row_counts(snapshot_conn, tables)
        mismatches = dict((t, dict(source=source[t], restored=restored.get(t)))
                          for t in source if source[t] != restored.get(t))
        if mismatches:
            raise BackupError('verification failed: row counts of the restored copy differ from the source: %s'
                              % ', '.join('%s %s != %s' % (t, m['restored'], m['source']) for t, m in sorted(mismatches.items())))
        return dict(row_counts=source, tables=len(source))

    def restore_into(self, path, fmt, dbname, clean, single_transaction, jobs, no_owner):
        env = dict(self.env, PGDATABASE=dbname)
        if fmt == 'plain':
            script = path
            if path.endswith('.gz'):
                script = self.gunzip(path)
            argv = [self.tools.path('psql'), '--no-psqlrc', '--quiet', '--no-password', '--set=ON_ERROR_STOP=1',
                    # A quoted dbname='...' connection string: a bare --dbname=<name> is expanded as one.
                    '--dbname=%s' % pg.dbname_conninfo(dbname), '--file=%s' % script]
            if single_transaction:
                argv.append('--single-transaction')
            step = 'psql restoring %s into %s' % (os.path.basename(path), dbname)
        else:
            argv = [self.tools.path('pg_restore'), '--exit-on-error', '--no-password',
                    '--dbname=%s' % pg.dbname_conninfo(dbname)]
            if clean:
                argv += ['--clean', '--if-exists']
            if single_transaction:
                argv.append('--single-transaction')
            elif jobs > 1:
                argv.append('--jobs=%d' % jobs)
            if no_owner:
                argv += ['--no-owner', '--no-acl']
            argv.append(path)
            step = 'pg_restore of %s into %s' % (os.path.basename(path), dbname)
        try:
            self.runner.run(argv, env=env, check_rc=True, step=step)
        finally:
            if fmt == 'plain' and script != path:
                os.unlink(script)

    def gunzip(self, path):
        import gzip
        import shutil
        target = os.path.join(self.workspace.path, 'restore.sql')
        with gzip.open(path, 'rb') as src, open(target, 'wb') as dst:
            shutil.copyfileobj(src, dst, 4 * 1024 * 1024)
        return target

    # -- upload ----------------------------------------------------------------------------
    def object_metadata(self, manifest):
        return {'sha256': manifest['sha256'], 'db': manifest['db'], 'label': manifest['label'],
                'format': manifest['format'], 'created': str(manifest['created'])}

    def finish_streamed_upload(self, uploader, multipart, manifest):
        """Publish a streamed upload: the .sha256 sidecar first, then the object, then its sha256 tag.

        The final key never holds an object whose checksum cannot be found: the sidecar exists before
        CompleteMultipartUpload makes the object visible.  A backup smaller than one part is one PutObject
        with the sha256 as real metadata.
        """
        p = self.params
        key = uploader.key
        extra = s3.write_args(p)
        self.upload_sidecar(manifest['path'], key, '.sha256')
        if multipart:
            try:
                uploader.complete()
            except s3.S3Error:
                uploader.abort()
                with contextlib.suppress(s3.S3Error):
                    s3.delete_keys(self.s3, p['s3_bucket'], [key + '.sha256'])
                raise
            try:
                s3.put_tags(self.s3, p['s3_bucket'], key, {'sha256': manifest['sha256']})
            except s3.S3Error as exc:
                self.module.warn('%s; the checksum is still recorded in s3://%s/%s.sha256' % (exc, p['s3_bucket'], key))
        else:
            with open(manifest['path'], 'rb') as handle:
                data = handle.read()
            metadata = dict(uploader.metadata, sha256=manifest['sha256'])
            s3.put_bytes(self.s3, p['s3_bucket'], key, data, metadata, extra)
        self.upload_sidecar(manifest['path'], key, '.json')
        return 's3://%s/%s' % (p['s3_bucket'], key)

    def upload_finished(self, path, manifest):
        """Upload a finished backup (file or directory) and its sidecars; return its s3:// URI."""
        p = self.params
        name = os.path.basename(path)
        key = s3.join_key(p['s3_prefix'], name)
        metadata = self.object_metadata(manifest)
        extra = s3.write_args(p)
        self.upload_sidecar(path, key, '.sha256')
        if os.path.isdir(path):
            for entry in sorted(os.listdir(path)):
                s3.upload_file(self.s3, p['s3_bucket'], '%s/%s' % (key, entry), os.path.join(path, entry), metadata, extra)
        else:
            s3.upload_file(self.s3, p['s3_bucket'], key, path, metadata, extra)
        self.upload_sidecar(path, key, '.json')
        return 's3://%s/%s' % (p['s3_bucket'], key)

    def upload_sidecar(self, path, key, suffix):
        p = self.params
        s3.upload_file(self.s3, p['s3_bucket'], key + suffix, path + suffix, {}, s3.write_args(p))

    def remote_checksum(self, bucket, key, uri, head=None):
        """The sha256 recorded for an S3 archive: metadata, else tag, else sidecar; refuse when they disagree."""
        found = s3.recorded_checksums(self.s3, bucket, key, head)
        if len(set(found.values())) > 1 and not self.params['checksum']:
            raise BackupError('refusing to restore %s: its recorded checksums disagree (%s); one of them was altered. '
                              'Pass checksum=<sha256> if you know the right one'
                              % (uri, ', '.join('%s %s' % (k, v) for k, v in sorted(found.items()))))
        for source in ('metadata', 'tag', 'sidecar'):
            if source in found:
                return found[source]
        return None

    # -- retention -------------------------------------------------------------------------
    def apply_retention(self, dbname, label, keep_name, planned=False):
        """Delete complete backups of dbname/label beyond the newest keep, locally and in S3.

        Only complete, verified backups count and are deleted (an archive without sidecars or manifest is left
        alone); a backup is dbname's by the database its manifest records, not by its name; and a backup another
        run reported after this run started is never deleted (it may be the one that run's caller relies on).
        """
        if not self.params['keep']:
            return False
        # In check mode the planned backup does not exist yet but takes one of the slots.
        keep = self.params['keep'] - 1 if planned else self.params['keep']
        changed = False
        backups = catalog.local_backups(self.params['dest'], dbname, label)
        for info in backups:
            info['finished'] = catalog.local_finished(info['path'])
        for info in catalog.select_expired(backups, keep, {keep_name}, since=self.started):
            changed = True
            if not self.module.check_mode:
                catalog.remove_backup(info['path'])
            self.removed.append(info['path'])
        if self.params['s3_bucket']:
            bucket = self.params['s3_bucket']
            listed = self.s3_catalog(bucket, self.params['s3_prefix'], dbname, label)
            for info in catalog.select_expired(listed, keep, {keep_name}, since=self.started):
                changed = True
                if not self.module.check_mode:
                    s3.delete_keys(self.s3, bucket, info['keys'])
                self.removed.append('s3://%s/%s' % (bucket, info['key']))
        return changed

    def s3_catalog(self, bucket, prefix, dbname, label):
        """Backups of dbname/label in S3, newest first, as catalog.s3_backups lists them, each with its manifest
        read (None while still being uploaded): those whose manifest names another database are left out."""
        keys = s3.list_keys(self.s3, bucket, s3.join_key(prefix, ''))
        found = []
        for info in catalog.s3_backups(keys, prefix, dbname, label):
            info['manifest'] = self.s3_manifest(bucket, info['manifest_key']) if info['manifest_key'] else None
            if not catalog.belongs_to(info, dbname, info['manifest']):
                continue
            info['complete'] = catalog.is_complete(info['manifest'], info['key'] + '.sha256' in info['keys'])
            info['finished'] = info['manifest_modified']
            found.append(info)
        return found

    def s3_manifest(self, bucket, key):
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)['Body'].read()
        except Exception as exc:  # pylint: disable=broad-except
            if getattr(exc, 'response', {}).get('Error', {}).get('Code') in ('NoSuchKey', '404'):
                return None  # deleted since the listing (another run's retention)
            raise BackupError(s3.explain(exc, 'reading the manifest s3://%s/%s failed' % (bucket, key)))
        try:
            return json.loads(body.decode('utf-8'))
        except ValueError:
            return None

    # -- restore ---------------------------------------------------------------------------
    def restore(self):
        p = self.params
        target = self.conn['dbname']
        started = time.time()
        source_path, fmt, expected, source_uri = self.resolve_source()
        checksum_verified, data_tables, creates_public = self.check_source(source_path, fmt, expected)
        # A clean restore (or one into a new database) goes into a scratch database that replaces the target
        # only once it is complete: pg_restore --clean cannot drop a table that an object created after the
        # backup depends on (a materialized view), and it keeps whatever the archive does not hold.
        admin = pg.connect(self.conn, dbname=p['maintenance_db'])
        try:
            exists = pg.database_exists(admin, target)
            swap = p['clean'] or not exists
            sessions = pg.other_sessions(admin, target) if exists else []
            if sessions and not p['terminate_sessions']:
                raise BackupError(self.sessions_message(target, sessions))
            # Before anything changes (the safety backup included): the privileges the swap needs.
            missing = pg.missing_restore_privileges(admin, target, exists) if swap else []
            if missing:
                raise BackupError(
                    "a clean restore (clean=true, or a target database that does not exist yet) of database '%s' as "
                    "user '%s' needs %s; nothing was changed. Grant it, restore as the owner or a superuser, or "
                    "restore in place with clean=false into an existing database"
                    % (target, self.conn['user'], '; '.join(missing)))
        finally:
            admin.close()
        restored = dict(path=source_path, name=os.path.basename((source_path or source_uri).rstrip('/')),
                        format=fmt, sha256=expected)
        result = dict(target_db=target, source=source_uri, checksum_verified=checksum_verified,
                      created_database=not exists, terminated_sessions=[], safety_backup=None,
                      single_transaction=p['jobs'] == 1, method='swap' if swap else 'in_place', scratch_db=None,
                      previous_db=None, previous_db_dropped=False)
        if exists and p['safety_backup'] and self.has_tables(target):
            with self.options(**SAFETY_BACKUP_OPTIONS):
                if self.module.check_mode:
                    result['safety_backup'] = self.planned(target, 'pre_restore')
                else:
                    dummy, result['safety_backup'] = self.backup(target, 'pre_restore', allow_reuse=False)
        # Lower case, so the names work unquoted in psql.
        stamp = utcnow().strftime(catalog.TIMESTAMP_FORMAT).lower()
        scratch = derived_name(target, '__restore_' + stamp)
        previous = derived_name(target, '__pre_restore_' + stamp)
        if self.module.check_mode:
            if swap:
                result['scratch_db'] = scratch
                if exists and self.keep_previous():
                    result['previous_db'] = previous
            return result, restored
        if swap:
            self.restore_by_swap(source_path, fmt, target, exists, scratch, previous, result, expected,
                                 data_tables, creates_public)
        else:
            if p['jobs'] > 1:
                self.module.warn('jobs > 1: the restore cannot run in one transaction; if it fails halfway, restore the '
                                 'safety backup (or use clean=true, which restores into a new database first)')
            if p['terminate_sessions']:
                admin = pg.connect(self.conn, dbname=p['maintenance_db'])
                try:
                    result['terminated_sessions'] = pg.terminate_sessions(admin, target)
                finally:
                    admin.close()
            self.restore_into(source_path, fmt, target, clean=False, single_transaction=p['jobs'] == 1,
                              jobs=p['jobs'], no_owner=p['no_owner'])
        connection = pg.connect(self.conn, dbname=target)
        try:
            result['row_counts'] = pg.row_counts(connection, pg.user_tables(connection))
        finally:
            connection.close()
        result['duration'] = round(time.time() - started, 3)
        return result, restored

    def keep_previous(self):
        """Keep the replaced database? By default only when no safety backup was asked for."""
        if self.params['keep_previous'] is not None:
            return self.params['keep_previous']
        return not self.params['safety_backup']

    @staticmethod
    def sessions_message(target, sessions, when=''):
        return ("%d other session(s) are connected to database '%s'%s (%s); stop the applications using it or set "
                "terminate_sessions=true" % (len(sessions), target, when, '; '.join(
                    'pid %(pid)s user %(user)s app %(application_name)s from %(client)s %(state)s' % s
                    for s in sessions[:10])))

    def restore_by_swap(self, path, fmt, target, exists, scratch, previous, result, expected, data_tables,
                        creates_public):
        """Restore into a new database like the target, check it, then swap it in under the target's name."""
        p = self.params
        admin = pg.connect(self.conn, dbname=p['maintenance_db'])
        swapped = False
        try:
            try:
                if exists:
                    create, after = pg.clone_database_sql(admin, target, scratch)
                else:
                    create, after = 'CREATE DATABASE %s' % pg.quote_ident(admin, scratch), []
                with admin.cursor() as cursor:
                    cursor.execute(create)
                    result['scratch_db'] = scratch
                    for statement in after:
                        cursor.execute(statement)
            except pg.psycopg2.Error as exc:
                raise BackupError('cannot create the database %s to restore into: %s (the user needs CREATEDB, and '
                                  "membership in the target's owner role)" % (scratch, str(exc).strip()))
            self.fill_scratch(path, fmt, scratch, expected, data_tables, creates_public)
            if exists:
                self.swap_in(admin, target, scratch, previous, result)
            else:
                pg.rename_databases(admin, [(scratch, target)])
            swapped = True
        finally:
            if not swapped and result['scratch_db']:
                with contextlib.suppress(pg.psycopg2.Error):
                    pg.drop_database(admin, scratch, force=True)
                result['scratch_db'] = None
            if swapped and exists:
                try:
                    if self.keep_previous():
                        result['previous_db'] = previous
                    else:
                        pg.drop_database(admin, previous, force=True)
                        result['previous_db_dropped'] = True
                except pg.psycopg2.Error as exc:
                    result['previous_db'] = previous
                    self.module.warn('the restore succeeded but the replaced database %s could not be dropped: %s'
                                     % (previous, str(exc).strip()))
            admin.close()

    def fill_scratch(self, path, fmt, scratch, expected, data_tables, creates_public):
        """pg_restore into the scratch database; every table the archive has data for must be there, with the
        row counts its manifest recorded (verify=restore backups)."""
        p = self.params
        connection = pg.connect(self.conn, dbname=scratch)
        try:
            if creates_public:
                with connection.cursor() as cursor:
                    cursor.execute('DROP SCHEMA public')
            # --clean --if-exists on an empty database lets a --schema=public archive re-create that schema.
            self.restore_into(path, fmt, scratch, clean=fmt != 'plain', single_transaction=p['jobs'] == 1,
                              jobs=p['jobs'], no_owner=p['no_owner'])
            counts = pg.row_counts(connection, pg.user_tables(connection))
        finally:
            connection.close()
        missing = ['%s.%s' % t for t in data_tables or [] if '%s.%s' % t not in counts]
        if missing:
            raise BackupError('the restore into %s lacks tables the archive has data for: %s; the target was not touched'
                              % (scratch, ', '.join(missing[:20])))
        manifest = catalog.read_manifest(path) if path else None
        recorded = (manifest or {}).get('verification', {}).get('row_counts') or {}
        if manifest and manifest.get('sha256') == expected and recorded:
            wrong = ['%s %s != %s' % (t, counts.get(t), n) for t, n in sorted(recorded.items()) if counts.get(t) != n]
            if wrong:
                raise BackupError('the restore into %s has other row counts than the backup recorded: %s; the target was '
                                  'not touched' % (scratch, ', '.join(wrong[:20])))

    def swap_in(self, admin, target, scratch, previous, result):
        """Rename target to previous and scratch to target in one transaction, terminating sessions if allowed."""
        p = self.params
        for attempt in range(1, 6):
            if p['terminate_sessions']:
                result['terminated_sessions'].extend(pg.terminate_sessions(admin, target))
            else:
                sessions = pg.other_sessions(admin, target)
                if sessions:
                    raise BackupError(self.sessions_message(target, sessions, ' (connected during the restore)') +
                                      '; the target was not touched')
            try:
                pg.rename_databases(admin, [(target, previous), (scratch, target)])
                return
            except pg.psycopg2.Error as exc:
                if 'being accessed by other users' not in str(exc) or attempt == 5:
                    raise BackupError('cannot swap the restored database %s in for %s: %s; the target was not touched'
                                      % (scratch, target, str(exc).strip()))
                time.sleep(0.2 * attempt)

    def has_tables(self, dbname):
        connection = pg.connect(self.conn, dbname=dbname)
        try:
            return bool(pg.user_tables(connection))
        finally:
            connection.close()

    def resolve_source(self):
        """(local path, format, expected sha256 or None, source description)."""
        p = self.params
        if p['src'] and p['src'].startswith('s3://'):
            bucket, key = s3.parse_s3_uri(p['src'])
            return self.fetch_from_s3(bucket, key.rstrip('/'), p['src'])
        if p['src']:
            path = p['src']
            if not os.path.exists(path):
                raise BackupError("src '%s' does not exist" % path)
            return path, self.format_of(path), catalog.read_checksum(path), path
        source_db = p['source_db'] or self.conn['dbname']
        # Only complete backups whose manifest records source_db: a name alone can be another database's.
        local = [b for b in catalog.local_backups(p['dest'], source_db, p['label']) if b['complete']]
        remote = []
        if p['s3_bucket']:
            remote = [b for b in self.s3_catalog(p['s3_bucket'], p['s3_prefix'], source_db, p['label']) if b['complete']]
        newest_local = local[0] if local else None
        newest_remote = remote[0] if remote else None
        if newest_remote and (not newest_local or catalog.sort_key(newest_remote) > catalog.sort_key(newest_local)):
            return self.fetch_from_s3(p['s3_bucket'], newest_remote['key'], 's3://%s/%s' % (p['s3_bucket'], newest_remote['key']))
        if newest_local:
            path = newest_local['path']
            return path, newest_local['format'], catalog.read_checksum(path), path
        raise BackupError("no backup of database '%s' with label '%s' found in %s%s; set src to restore a given backup"
                          % (source_db, p['label'], p['dest'],
                             ' or s3://%s/%s' % (p['s3_bucket'], p['s3_prefix']) if p['s3_bucket'] else ''))

    def format_of(self, path):
        info = catalog.parse_name(os.path.basename(path.rstrip('/')))
        if info:
            return info['format']
        if os.path.isdir(path):
            return 'directory'
        with open(path, 'rb') as handle:
            magic = handle.read(512)
        if magic.startswith(b'PGDMP'):
            return 'custom'
        if magic[257:262] == b'ustar':
            return 'tar'
        return 'plain'

    def fetch_from_s3(self, bucket, key, uri):
        """Download an S3 backup into dest (unless already there with the same checksum)."""
        p = self.params
        name = key.rsplit('/', 1)[-1]
        info = catalog.parse_name(name)
        fmt = info['format'] if info else None
        if fmt == 'directory':
            keys = [k for k, dummy_s, dummy_m in s3.list_keys(self.s3, bucket, key + '/')]
            if not keys:
                raise BackupError('%s has no files' % uri)
            expected = s3.head(self.s3, bucket, keys[0]).get('Metadata', {}).get('sha256')
            if not expected and s3.exists(self.s3, bucket, key + '.sha256'):
                sidecar = self.s3.get_object(Bucket=bucket, Key=key + '.sha256')['Body'].read()
                expected = hashlib.sha256(sidecar).hexdigest()
        else:
            keys = [key]
            expected = self.remote_checksum(bucket, key, uri)
        local = os.path.join(p['dest'], name)
        if self.module.check_mode:
            return None, fmt, expected, uri
        self.ensure_dest()
        if os.path.exists(local) and expected and catalog.read_checksum(local) == expected:
            return local, fmt or self.format_of(local), expected, uri
        partial = catalog.partial_path(p['dest'], name)
        try:
            if fmt == 'directory':
                os.makedirs(partial, 0o700)
                for k in keys:
                    s3.download(self.s3, bucket, k, os.path.join(partial, k.rsplit('/', 1)[-1]))
                s3.download(self.s3, bucket, key + '.sha256', partial + '.sha256.tmp')
            else:
                s3.download(self.s3, bucket, key, partial)
            if fmt is None:
                fmt = self.format_of(partial)
            if os.path.exists(local):
                catalog.remove_backup(local)
            os.rename(partial, local)
            if fmt == 'directory':
                os.rename(partial + '.sha256.tmp', local + '.sha256')
        except Exception:
            self.discard(partial)
            self.discard(partial + '.sha256.tmp')
            raise
        return local, fmt, expected, uri

    def check_source(self, path, fmt, expected):
        """Refuse corrupt or truncated archives before anything touches the target."""
        p = self.params
        if p['checksum'] and p['checksum'] != 'skip':
            expected = p['checksum'].lower()
        if path is None:  # check mode with an S3 source: nothing downloaded
            return None, None, False
        verified = False
        if p['checksum'] == 'skip':
            self.module.warn('checksum=skip: restoring %s without checking its sha256' % path)
        elif not expected:
            raise BackupError("no recorded sha256 for %s (no .sha256 sidecar, no S3 metadata); pass checksum=<sha256>, "
                              "or checksum=skip to restore it unchecked" % path)
        else:
            ok, actual = catalog.verify_checksum(path, fmt, expected)
            if not ok:
                raise BackupError('refusing to restore %s: its sha256 %s does not match the recorded %s; the archive is '
                                  'corrupt or truncated' % (path, actual, expected))
            verified = True
        if fmt == 'plain':
            return verified, None, self.scan_plain(path)
        dummy, data_tables = self.list_archive(path)
        return verified, data_tables, False


def main():
    argument_spec = pg.postgres_common_argument_spec()
    argument_spec.update(s3.s3_argument_spec())
    argument_spec.update(
        state=dict(type='str', default='present', choices=['present', 'restored']),
        dest=dict(type='path', required=True),
        label=dict(type='str', default='backup'),
        format=dict(type='str', default='custom', choices=['custom', 'directory', 'plain', 'tar']),
        compress=dict(type='int'),
        jobs=dict(type='int', default=1),
        schemas=dict(type='list', elements='str', default=[]),
        exclude_schemas=dict(type='list', elements='str', default=[]),
        tables=dict(type='list', elements='str', default=[]),
        exclude_tables=dict(type='list', elements='str', default=[]),
        verify=dict(type='str', default='list', choices=['none', 'list', 'restore']),
        keep=dict(type='int', default=0),
        max_age=dict(type='str'),
        reuse_key=dict(type='str', no_log=False),
        progress_file=dict(type='path'),
        pg_bin_dir=dict(type='path'),
        src=dict(type='str'),
        source_db=dict(type='str'),
        checksum=dict(type='str', no_log=False),
        clean=dict(type='bool', default=False),
        no_owner=dict(type='bool', default=False),
        safety_backup=dict(type='bool', default=True),
        terminate_sessions=dict(type='bool', default=False),
        keep_previous=dict(type='bool'),
        maintenance_db=dict(type='str', default='postgres'),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[('src', 'source_db')],
    )
    job = PgBackup(module)
    result = dict(changed=False, removed=job.removed, executed_commands=job.runner.executed)
    try:
        job.validate()
        with PrivateWorkspace() as workspace:
            job.workspace = workspace
            job.prepare(workspace)
            if module.params['state'] == 'present':
                result['changed'], result['backup'] = job.backup(job.conn['dbname'], module.params['label'])
            else:
                result['restore'], result['backup'] = job.restore()
                result['changed'] = True
    except (BackupError, pg.PostgresError, s3.S3Error, catalog.CatalogError, CommandError) as exc:
        module.fail_json(msg=to_native(exc), **result)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='pg_backup failed unexpectedly: %s' % to_native(exc), exception=traceback.format_exc(),
                         **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
