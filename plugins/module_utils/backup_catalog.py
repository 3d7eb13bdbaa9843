# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names, sidecars and retention of pg_backup archives, on local disk and in S3.

A backup is named ``<db>.<label>.<YYYYmmddTHHMMSSZ>[-N].<ext>``; dots separate the parts, and
neither the label nor the (sanitised) database name may contain one, so names never collide.
Beside it: ``<name>.sha256`` (``sha256sum -c`` format) and ``<name>.json`` (the manifest).  The
manifest is written last, after verification: a backup without one is never reused.
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
NAME_RE = re.compile(r'^(?P<db>[A-Za-z0-9_-]+)\.(?P<label>[A-Za-z0-9_-]+)\.(?P<ts>\d{8}T\d{6}Z)(?:-(?P<seq>\d+))?'
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
    return re.sub(r'[^A-Za-z0-9_-]', '_', dbname)


def extension(fmt, compress):
    ext = EXTENSIONS[fmt]
    if fmt == 'plain' and compress:
        ext += '.gz'
    return ext


def backup_name(dbname, label, fmt, compress, when, taken=()):
    """A new backup's name; ``taken`` holds names already present (a second backup in the same second)."""
    base = '%s.%s.%s' % (safe_db_name(dbname), label, when.strftime(TIMESTAMP_FORMAT))
    ext = extension(fmt, compress)
    name = '%s.%s' % (base, ext)
    seq = 0
    while name in taken:
        seq += 1
        name = '%s-%d.%s' % (base, seq, ext)
    return name


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
    """Backups of dbname/label in dest, newest first; each with 'manifest' (dict or None)."""
    found = []
    try:
        entries = os.listdir(dest)
    except OSError:
        return found
    for entry in entries:
        info = parse_name(entry)
        if not info or info['db'] != safe_db_name(dbname) or info['label'] != label:
            continue
        info['path'] = os.path.join(dest, entry)
        info['manifest'] = read_manifest(info['path'])
        found.append(info)
    found.sort(key=sort_key, reverse=True)
    return found


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


def select_expired(backups, keep, protect=()):
    """Backups (newest first) beyond the newest ``keep``, never any name in protect."""
    return [b for b in backups[keep:] if b['name'] not in protect]


# -- S3 catalog ----------------------------------------------------------------------------

def s3_backups(keys, prefix, dbname, label):
    """Group S3 keys under prefix into backups of dbname/label, newest first.

    Each item: name, created, format, keys (every object of the backup, sidecars included), key
    (the archive object, or the directory prefix for directory format).
    """
    base = (prefix or '').strip('/')
    base = base + '/' if base else ''
    grouped = {}
    for key, dummy_size, dummy_modified in keys:
        if not key.startswith(base):
            continue
        rest = key[len(base):]
        head, sep, dummy_tail = rest.partition('/')
        name = head
        for suffix in ('.sha256', '.json'):
            if not sep and name.endswith(suffix):
                name = name[:-len(suffix)]
        info = parse_name(name)
        if not info or info['db'] != safe_db_name(dbname) or info['label'] != label:
            continue
        entry = grouped.setdefault(name, dict(info, keys=[], key=base + name))
        entry['keys'].append(key)
    found = list(grouped.values())
    found.sort(key=sort_key, reverse=True)
    return found
