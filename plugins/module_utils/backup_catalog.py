# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names, sidecars and retention of pg_backup archives, on local disk and in S3.

A backup is named ``<db>.<label>.<YYYYmmddTHHMMSSZ>[-N].<ext>``; dots separate the parts, and
neither the label nor the database part may contain one.  The database part is the database name
itself when it has only letters, digits, ``_`` and ``-``; any other name is written with those
characters (the rest replaced by ``_``) followed by ``@`` and 16 hex digits of the name's sha256, so two
databases never share a prefix (``a.b`` and ``a_b`` did before: see ``file_db_name``).
Beside it: ``<name>.sha256`` (``sha256sum -c`` format) and ``<name>.json`` (the manifest, which records
the real database name).  Both sidecars are written first under hidden ``.partial.`` names; the archive
takes its final name last, so a backup under a final name always has its sidecars.  Retention and lookup
go by the database recorded in the manifest and count only complete, verified backups.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess

EXTENSIONS = {'custom': 'dump', 'directory': 'dir', 'plain': 'sql', 'tar': 'tar'}
FORMATS_BY_EXTENSION = {'dump': 'custom', 'dir': 'directory', 'sql': 'plain', 'sql.gz': 'plain', 'tar': 'tar'}
NAME_RE = re.compile(r'^(?P<db>[A-Za-z0-9_-]+(?:@[0-9a-f]{16})?)\.(?P<label>[A-Za-z0-9_-]+)\.(?P<ts>\d{8}T\d{6}Z)(?:-(?P<seq>\d+))?'
                     r'\.(?P<ext>dump|dir|sql\.gz|sql|tar)$')
LABEL_RE = re.compile(r'^[A-Za-z0-9_-]{1,64}$')
TIMESTAMP_FORMAT = '%Y%m%dT%H%M%SZ'
PARTIAL_PREFIX = '.partial.'
READ_SIZE = 1024 * 1024
PIPE_SIZE = 1024 * 1024
LOCK_NAME = '.pg_backup.lock'


class CatalogError(Exception):
    """A backup catalog step failed; the message is ready for fail_json."""


def safe_db_name(dbname):
    """dbname with every character other than letters, digits, '_' and '-' replaced by '_' (not injective:
    the database part of names written before the hash was added)."""
    return re.sub(r'[^A-Za-z0-9_-]', '_', dbname)


def file_db_name(dbname):
    """The database part of a backup name: injective, file- and S3-safe.  A name that is already safe is kept
    as it is (so names of such databases did not change); any other gets its sha256 after an '@', which a safe
    name cannot contain."""
    safe = safe_db_name(dbname)
    if safe == dbname:
        return dbname
    return '%s@%s' % (safe, hashlib.sha256(dbname.encode('utf-8')).hexdigest()[:16])


def name_prefixes(dbname):
    """Database parts under which backups of dbname can be found: today's, and the one before the hash."""
    return {file_db_name(dbname), safe_db_name(dbname)}


def extension(fmt, compress):
    ext = EXTENSIONS[fmt]
    if fmt == 'plain' and compress:
        ext += '.gz'
    return ext


def backup_name(dbname, label, fmt, compress, when, taken=()):
    """A new backup's name; ``taken`` holds names already present (a second backup in the same second)."""
    base = '%s.%s.%s' % (file_db_name(dbname), label, when.strftime(TIMESTAMP_FORMAT))
    ext = extension(fmt, compress)
    name = '%s.%s' % (base, ext)
    seq = 0
    while name in taken:
        seq += 1
        name = '%s-%d.%s' % (base, seq, ext)
    return name


def names_in(dest, existing=()):
    """Every name a new backup in dest must not take: the entries there, not only dbname's backups (a name
    written before the hash, e.g. ``c_x.`` holding ``c.x``, is another database's and must not be overwritten),
    and those of ``existing`` (planned in check mode, not yet on disk)."""
    try:
        names = set(os.listdir(dest))
    except OSError:
        names = set()
    return names | set(b['name'] for b in existing)


def parse_name(name):
    """Dict with db, label, created (datetime, UTC), seq, format for a backup name, or None."""
    match = NAME_RE.match(name)
    if not match:
        return None
    created = datetime.datetime.strptime(match.group('ts'), TIMESTAMP_FORMAT).replace(tzinfo=datetime.timezone.utc)
    return dict(name=name, db=match.group('db'), label=match.group('label'), created=created,
                seq=int(match.group('seq') or 0), format=FORMATS_BY_EXTENSION[match.group('ext')])


def sort_key(info):
    return (info['created'], info['seq'])


def parse_duration(text):
    """Seconds in '30m', '2h', '1h30m', '45s', '1d' or a bare number of seconds; raise ValueError."""
    text = str(text).strip().lower()
    if re.match(r'^\d+$', text):
        return int(text)
    parts = re.findall(r'(\d+)\s*([smhdw])', text)
    if not parts or re.sub(r'(\d+)\s*([smhdw])', '', text).strip():
        raise ValueError(text)
    factor = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}
    return sum(int(n) * factor[u] for n, u in parts)


# -- local catalog -------------------------------------------------------------------------

def local_backups(dest, dbname, label):
    """Backups of dbname/label in dest, newest first; each with 'manifest' (dict or None) and 'complete'.

    A backup whose manifest names another database is not one of dbname's (a name written before the
    hash, e.g. ``a_b.`` holding ``a.b``).  'complete': both sidecars are there and the manifest says
    verification passed; only complete backups count toward retention and are restored by label.
    """
    found = []
    try:
        entries = os.listdir(dest)
    except OSError:
        return found
    prefixes = name_prefixes(dbname)
    for entry in entries:
        info = parse_name(entry)
        if not info or info['db'] not in prefixes or info['label'] != label:
            continue
        info['path'] = os.path.join(dest, entry)
        info['manifest'] = read_manifest(info['path'])
        if not belongs_to(info, dbname, info['manifest']):
            continue
        info['complete'] = is_complete(info['manifest'], os.path.exists(info['path'] + '.sha256'))
        found.append(info)
    found.sort(key=sort_key, reverse=True)
    return found


def belongs_to(info, dbname, manifest):
    """Whether a backup found under one of dbname's prefixes is dbname's: its manifest says so, or (no manifest)
    its name can only be dbname's (the hashed form, or a safe name)."""
    if manifest is not None:
        return manifest.get('db') == dbname
    return info['db'] == file_db_name(dbname)


def is_complete(manifest, has_checksum):
    return bool(manifest) and has_checksum and bool((manifest.get('verification') or {}).get('passed'))


def read_manifest(path):
    try:
        with open(path + '.json') as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_atomically(path, text, mode=0o600):
    tmp = os.path.join(os.path.dirname(path), PARTIAL_PREFIX + os.path.basename(path))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'w') as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(tmp, path)
    fsync_dir(os.path.dirname(path))


def write_manifest(path, manifest):
    write_atomically(path + '.json', json.dumps(manifest, indent=2, sort_keys=True, default=str) + '\n')


def checksum_lines(path, fmt, name=None):
    """sha256sum-format text for a backup (listed as ``name``), and the digest that stands for the whole backup."""
    name = name or os.path.basename(path)
    if fmt != 'directory':
        digest = sha256_file(path)
        return '%s  %s\n' % (digest, name), digest
    lines = []
    for entry in sorted(os.listdir(path)):
        lines.append('%s  %s/%s\n' % (sha256_file(os.path.join(path, entry)), name, entry))
    text = ''.join(lines)
    return text, hashlib.sha256(text.encode('utf-8')).hexdigest()


def write_checksum(path, text):
    write_atomically(path + '.sha256', text, mode=0o644)


def read_checksum(path):
    """The recorded digest for a backup (see checksum_lines), or None when no sidecar exists."""
    try:
        with open(path + '.sha256') as handle:
            text = handle.read()
    except OSError:
        return None
    if os.path.isdir(path):
        return hashlib.sha256(text.encode('utf-8')).hexdigest()
    first = text.split()
    return first[0] if first else None


def verify_checksum(path, fmt, expected):
    """Compare a backup with its expected digest; return (ok, actual)."""
    if fmt == 'directory':
        try:
            with open(path + '.sha256') as handle:
                recorded = handle.read()
        except OSError:
            recorded = ''
        actual_text, actual = checksum_lines(path, fmt)
        ok = actual == expected and actual_text == recorded
        return ok, actual
    actual = sha256_file(path)
    return actual == expected, actual


def sha256_file(path, chunk=4 * 1024 * 1024):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        while True:
            data = handle.read(chunk)
            if not data:
                break
            digest.update(data)
    return digest.hexdigest()


def write_command_output(argv, env, path, errors_path, on_progress=None):
    """Run argv with its stdout copied into a new file at path (0600), hashed on the way, then fsynced.

    Return (rc, stderr text, sha256 hex, size, write_error): write_error is the OSError that stopped the copy
    (the disk is full), after which the command was killed.  ``on_progress(size)`` is called after each write.
    """
    digest = hashlib.sha256()
    size = 0
    write_error = None
    with open(errors_path, 'wb') as stderr:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=env,
                                    close_fds=True)
        except OSError:
            os.close(fd)
            raise
        try:
            pipe = proc.stdout.fileno()
            try:  # a bigger pipe means fewer, larger reads (Linux only; harmless elsewhere)
                fcntl.fcntl(pipe, getattr(fcntl, 'F_SETPIPE_SZ', 1031), PIPE_SIZE)
            except OSError:
                pass
            while True:
                data = os.read(pipe, READ_SIZE)
                if not data:
                    break
                digest.update(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                size += len(data)
                if on_progress:
                    on_progress(size)
            os.fsync(fd)
        except OSError as exc:
            write_error = exc
            proc.kill()
        finally:
            os.close(fd)
            proc.stdout.close()
            rc = proc.wait()
    with open(errors_path, 'rb') as handle:
        text = handle.read().decode('utf-8', 'replace')
    return rc, text, digest.hexdigest(), size, write_error


def backup_size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    return os.path.getsize(path)


def fsync_path(path):
    """fsync a file, or every file of a directory and the directory itself."""
    if os.path.isdir(path):
        for entry in os.listdir(path):
            fsync_path(os.path.join(path, entry))
        fsync_dir(path)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path):
    fd = os.open(path or '.', os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_backup(path):
    """Remove a backup and its sidecars; return the paths removed."""
    removed = []
    for candidate in (path, path + '.sha256', path + '.json'):
        if os.path.isdir(candidate) and not os.path.islink(candidate):
            shutil.rmtree(candidate)
            removed.append(candidate)
        elif os.path.lexists(candidate):
            os.unlink(candidate)
            removed.append(candidate)
    return removed


def remove_partials(dest):
    """Remove leftovers of killed runs (the caller holds the dest lock); return their paths."""
    removed = []
    for entry in os.listdir(dest):
        if entry.startswith(PARTIAL_PREFIX):
            path = os.path.join(dest, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
            removed.append(path)
    return removed


def partial_path(dest, name):
    return os.path.join(dest, PARTIAL_PREFIX + name)


class DestLock(object):
    """An exclusive flock on dest, so two runs never write or prune the same directory at once."""

    def __init__(self, dest, wait=True, create=True):
        self.path = os.path.join(dest, LOCK_NAME)
        self.wait = wait
        self.create = create
        self.handle = None

    def __enter__(self):
        if not self.create and not os.path.exists(self.path):
            return self  # check mode: nothing is written, so there is nothing to guard
        self.handle = open(self.path, 'a')
        flags = fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(self.handle.fileno(), flags)
        except OSError as exc:
            self.handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise CatalogError('another pg_backup run holds %s; wait for it to finish' % self.path)
            raise
        return self

    def __exit__(self, *exc):
        if self.handle:
            self.handle.close()
        return False


def select_expired(backups, keep, protect=(), since=None):
    """Complete backups (newest first) beyond the newest ``keep`` complete ones, never any name in protect nor
    one whose run finished at or after ``since`` (a concurrent run reported it: see 'finished').  Incomplete
    backups neither count nor are deleted."""
    complete = [b for b in backups if b.get('complete', True)]
    return [b for b in complete[keep:] if b['name'] not in protect
            and not (since is not None and b.get('finished') is not None and b['finished'] >= since)]


def local_finished(path):
    """When the run that made or reused the backup at path finished with it: its manifest's mtime (UTC); the
    run touches it last, while it still holds the dest lock."""
    try:
        return datetime.datetime.fromtimestamp(os.stat(path + '.json').st_mtime, datetime.timezone.utc)
    except OSError:
        return None


def touch(path):
    """Mark the backup at path as just reported by this run (see local_finished)."""
    try:
        os.utime(path + '.json', None)
    except OSError:
        pass


# -- S3 catalog ----------------------------------------------------------------------------

def s3_backups(keys, prefix, dbname, label):
    """Group S3 keys under prefix into backups possibly of dbname/label, newest first.

    Each item: name, created, format, keys (every object of the backup, sidecars included), key
    (the archive object, or the directory prefix for directory format), manifest_key (the ``.json``
    object, None while the backup is still being uploaded) and manifest_modified.  The caller reads the
    manifest to tell dbname's backups from those of another database under a name written before the hash.
    """
    base = (prefix or '').strip('/')
    base = base + '/' if base else ''
    grouped = {}
    prefixes = name_prefixes(dbname)
    for key, dummy_size, modified in keys:
        if not key.startswith(base):
            continue
        rest = key[len(base):]
        head, sep, dummy_tail = rest.partition('/')
        name = head
        suffix_found = None
        for suffix in ('.sha256', '.json'):
            if not sep and name.endswith(suffix):
                name = name[:-len(suffix)]
                suffix_found = suffix
        info = parse_name(name)
        if not info or info['db'] not in prefixes or info['label'] != label:
            continue
        entry = grouped.setdefault(name, dict(info, keys=[], key=base + name, manifest_key=None,
                                              manifest_modified=None))
        entry['keys'].append(key)
        if suffix_found == '.json':
            entry['manifest_key'] = key
            entry['manifest_modified'] = modified
    found = list(grouped.values())
    found.sort(key=sort_key, reverse=True)
    return found
