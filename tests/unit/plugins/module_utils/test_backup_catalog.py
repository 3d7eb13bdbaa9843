"""Names, durations and retention of pg_backup archives (plugins/module_utils/backup_catalog.py)."""

from __future__ import annotations

import datetime
import os

import pytest

from ansible_collections.runbook.deploy.plugins.module_utils import backup_catalog as catalog

UTC = datetime.timezone.utc
WHEN = datetime.datetime(2026, 11, 22, 13, 55, 0, tzinfo=UTC)


@pytest.mark.parametrize('fmt,compress,ext', [
    ('custom', None, 'dump'), ('directory', 5, 'dir'), ('plain', None, 'sql'), ('plain', 6, 'sql.gz'),
    ('plain', 0, 'sql'), ('tar', None, 'tar'),
])
def test_names_round_trip(fmt, compress, ext):
    name = catalog.backup_name('app-db', 'pre_migration', fmt, compress, WHEN)
    assert name == 'app-db.pre_migration.20261122T135500Z.%s' % ext
    info = catalog.parse_name(name)
    assert (info['db'], info['label'], info['created'], info['format']) == ('app-db', 'pre_migration', WHEN, fmt)


def test_same_second_gets_a_sequence_number():
    first = catalog.backup_name('app', 'x', 'custom', None, WHEN)
    second = catalog.backup_name('app', 'x', 'custom', None, WHEN, taken={first})
    third = catalog.backup_name('app', 'x', 'custom', None, WHEN, taken={first, second})
    assert (second, third) == ('app.x.20261122T135500Z-1.dump', 'app.x.20261122T135500Z-2.dump')
    assert catalog.sort_key(catalog.parse_name(third)) > catalog.sort_key(catalog.parse_name(second))


def test_database_names_are_sanitised_and_cannot_collide_with_labels():
    assert catalog.safe_db_name('my.db name') == 'my_db_name'
    # "app" + "pre_migration" and "app_pre" + "migration" stay apart because dots separate the parts.
    assert catalog.backup_name('app', 'pre_migration', 'custom', None, WHEN) != \
        catalog.backup_name('app_pre', 'migration', 'custom', None, WHEN)


@pytest.mark.parametrize('name', ['app.x.20261122T1355Z.dump', 'app.x.20261122T135500Z.zip', '.partial.app.x.20261122T135500Z.dump',
                                  'app.x.20261122T135500Z.dump.sha256', 'backup_20261122.sql'])
def test_foreign_names_are_not_backups(name):
    assert catalog.parse_name(name) is None


@pytest.mark.parametrize('text,seconds', [('30m', 1800), ('2h', 7200), ('1h30m', 5400), ('45s', 45), ('1d', 86400),
                                          ('90', 90), ('1w', 604800), (' 2 h ', 7200)])
def test_parse_duration(text, seconds):
    assert catalog.parse_duration(text) == seconds


@pytest.mark.parametrize('text', ['soon', '30x', '1h and 5m', '', '-5m'])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        catalog.parse_duration(text)


def test_select_expired_keeps_newest_and_protected():
    backups = [dict(name='n%d' % i) for i in range(5)]  # newest first
    assert [b['name'] for b in catalog.select_expired(backups, 2)] == ['n2', 'n3', 'n4']
    assert [b['name'] for b in catalog.select_expired(backups, 2, protect={'n3'})] == ['n2', 'n4']
    assert catalog.select_expired(backups, 0) == backups


def test_s3_backups_group_sidecars_and_directory_files():
    keys = [(k, 1, None) for k in [
        'prod/app.nightly.20261120T000000Z.dump', 'prod/app.nightly.20261120T000000Z.dump.sha256',
        'prod/app.nightly.20261120T000000Z.dump.json',
        'prod/app.nightly.20261121T000000Z.dir/toc.dat', 'prod/app.nightly.20261121T000000Z.dir/3001.dat.gz',
        'prod/app.nightly.20261121T000000Z.dir.sha256',
        'prod/app.other.20261122T000000Z.dump', 'prod/.partial.app.nightly.20261122T000000Z.dump',
        'elsewhere/app.nightly.20261123T000000Z.dump',
    ]]
    found = catalog.s3_backups(keys, 'prod/', 'app', 'nightly')
    assert [f['name'] for f in found] == ['app.nightly.20261121T000000Z.dir', 'app.nightly.20261120T000000Z.dump']
    assert sorted(found[0]['keys']) == ['prod/app.nightly.20261121T000000Z.dir.sha256',
                                        'prod/app.nightly.20261121T000000Z.dir/3001.dat.gz',
                                        'prod/app.nightly.20261121T000000Z.dir/toc.dat']
    assert found[1]['key'] == 'prod/app.nightly.20261120T000000Z.dump' and len(found[1]['keys']) == 3


def test_checksums_for_files_and_directories(tmp_path):
    archive = tmp_path / 'app.x.20261122T135500Z.dump'
    archive.write_bytes(b'PGDMP data')
    text, digest = catalog.checksum_lines(str(archive), 'custom')
    assert text == '%s  %s\n' % (digest, archive.name)
    catalog.write_checksum(str(archive), text)
    assert catalog.read_checksum(str(archive)) == digest
    assert catalog.verify_checksum(str(archive), 'custom', digest) == (True, digest)
    archive.write_bytes(b'PGDMP dat')
    assert catalog.verify_checksum(str(archive), 'custom', digest)[0] is False

    folder = tmp_path / 'app.x.20261122T135500Z.dir'
    folder.mkdir()
    (folder / 'toc.dat').write_bytes(b'toc')
    (folder / '3001.dat.gz').write_bytes(b'rows')
    text, digest = catalog.checksum_lines(str(folder), 'directory')
    assert text.splitlines()[1].endswith('  app.x.20261122T135500Z.dir/toc.dat')
    catalog.write_checksum(str(folder), text)
    assert catalog.read_checksum(str(folder)) == digest
    assert catalog.verify_checksum(str(folder), 'directory', digest)[0] is True
    (folder / '3001.dat.gz').write_bytes(b'rowz')
    assert catalog.verify_checksum(str(folder), 'directory', digest)[0] is False


def test_partials_and_lock(tmp_path):
    dest = str(tmp_path)
    (tmp_path / '.partial.app.x.20261122T135500Z.dump').write_bytes(b'half')
    (tmp_path / '.partial.app.x.20261122T135501Z.dir').mkdir()
    (tmp_path / 'app.x.20261122T135400Z.dump').write_bytes(b'whole')
    with catalog.DestLock(dest):
        removed = catalog.remove_partials(dest)
        with pytest.raises(catalog.CatalogError, match='another pg_backup run'):
            with catalog.DestLock(dest, wait=False):
                pass
    assert len(removed) == 2
    assert sorted(os.listdir(dest)) == ['.pg_backup.lock', 'app.x.20261122T135400Z.dump']


def test_database_part_of_names_is_injective():
    assert catalog.file_db_name('app_db') == 'app_db'
    dotted = catalog.file_db_name('app.db')
    assert dotted.startswith('app_db@') and dotted != catalog.file_db_name('app_db')
    assert catalog.file_db_name('app db') != dotted
    name = catalog.backup_name('app.db', 'x', 'custom', None, WHEN)
    assert catalog.parse_name(name)['db'] == dotted


def _write(dest, name, db, sidecars=True, passed=True):
    path = os.path.join(str(dest), name)
    with open(path, 'w') as handle:
        handle.write('archive')
    if sidecars:
        with open(path + '.sha256', 'w') as handle:
            handle.write('0' * 64 + '  ' + name + '\n')
        catalog.write_manifest(path, dict(db=db, verification=dict(passed=passed)))
    return path


def test_local_backups_go_by_the_manifest_and_read_old_names(tmp_path):
    _write(tmp_path, 'a_b.x.20261122T135500Z.dump', 'a_b')
    _write(tmp_path, 'a_b.x.20261122T135600Z.dump', 'a.b')  # written before the hash: a.b's
    _write(tmp_path, catalog.backup_name('a.b', 'x', 'custom', None, WHEN), 'a.b')
    _write(tmp_path, 'a_b.x.20261122T135700Z.dump', None, sidecars=False)  # incomplete leftover
    mine = catalog.local_backups(str(tmp_path), 'a_b', 'x')
    assert [(b['name'], b['complete']) for b in mine] == [
        ('a_b.x.20261122T135700Z.dump', False), ('a_b.x.20261122T135500Z.dump', True)]
    dotted = catalog.local_backups(str(tmp_path), 'a.b', 'x')
    assert sorted(b['name'] for b in dotted) == sorted(['a_b.x.20261122T135600Z.dump',
                                                       catalog.backup_name('a.b', 'x', 'custom', None, WHEN)])


def test_select_expired_counts_only_complete_and_spares_what_others_reported():
    def b(name, complete=True, finished=None):
        return dict(name=name, complete=complete, finished=finished)
    late = WHEN + datetime.timedelta(seconds=5)
    backups = [b('n0'), b('bad', complete=False), b('n1', finished=late), b('n2', finished=WHEN), b('n3')]
    assert [x['name'] for x in catalog.select_expired(backups, 1, since=WHEN + datetime.timedelta(seconds=1))] == \
        ['n2', 'n3']
    assert [x['name'] for x in catalog.select_expired(backups, 1)] == ['n1', 'n2', 'n3']
