"""The native engine's pure parts (plugins/module_utils/prisma_native.py) and Prisma's checksum rules (prisma.py).

Expected values come from prisma-engines: checksum.rs's own tests, apply_migration_script's Position block, the
P3018 / P3009 message texts.  The database parts are tested against PostgreSQL and the real Prisma CLI in
tests/integration/plugins/modules/test_prisma_migrate_native.py.
"""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.runbook.deploy.plugins.module_utils import prisma
from ansible_collections.runbook.deploy.plugins.module_utils import prisma_native as native


def test_checksum_is_sha256_hex_as_in_prisma_engines_tests():
    assert prisma.checksum(b'hello') == '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824'
    assert len(prisma.checksum(b'abcd')) == 64


@pytest.mark.parametrize('recorded, script', [
    ('ab\ncd\nef\ngh\rab', 'ab\r\ncd\r\nef\r\ngh\rab'),
    ('ab\r\ncd\r\nef\r\ngh\rab', 'ab\ncd\nef\ngh\rab'),
    ('ab\ncd\nef\ngh\rab\n', 'ab\r\ncd\r\nef\r\ngh\rab\r\n'),
])
def test_checksums_match_across_line_endings(recorded, script):
    checksums = prisma.script_checksums(script.encode())
    assert prisma.checksum_matches(checksums, prisma.checksum(recorded.encode()))


@pytest.mark.parametrize('recorded, script', [('abcd', 'abc'), ('abc', 'abc\n')])
def test_different_scripts_do_not_match(recorded, script):
    assert not prisma.checksum_matches(prisma.script_checksums(script.encode()), prisma.checksum(recorded.encode()))


def test_unpadded_checksums_of_old_prisma_versions_match():
    script = b'CREATE TABLE t (id int);\n'
    digest = hashlib.sha256(script).digest()
    assert any(byte < 16 for byte in bytearray(digest)), 'pick a script whose digest has a byte below 0x10'
    old = ''.join('%x' % byte for byte in bytearray(digest))
    assert len(old) < 64
    assert prisma.checksum_matches(prisma.script_checksums(script), old)
    assert not prisma.checksum_matches(prisma.script_checksums(script + b' '), old)
    assert not prisma.checksum_matches(prisma.script_checksums(script), '')


def test_script_lines_behave_like_rust_lines():
    assert native.script_lines('a\r\nb\n\nc\n') == ['a', 'b', '', 'c']
    assert native.script_lines('a') == ['a']
    assert native.script_lines('') == []


def test_error_position_shows_five_lines_before_the_failing_one():
    script = ''.join('SELECT %d;\n' % n for n in range(1, 8)) + 'SELECT * FROM missing;\n'
    position = script.index('missing') + 1  # PostgreSQL positions are 1-based
    block = native.error_position(script, position)
    assert block.startswith('\n\nPosition:\n')
    lines = block.split('\n')[3:]
    assert lines[0] == '\x1b[1m  3\x1b[0m SELECT 3;'
    assert lines[4] == '\x1b[1m  7\x1b[0m SELECT 7;'
    assert lines[5] == '\x1b[1m  8\x1b[1;31m SELECT * FROM missing;\x1b[0m'
    assert len(lines) == 6


def test_error_position_on_the_first_line_numbers_like_prisma():
    # Prisma's loop starts with five empty "previous lines"; only the one numbered 0 survives checked_sub.
    block = native.error_position('SELEC 1;\n', 1)
    assert block == '\n\nPosition:\n\x1b[1m  0\x1b[0m\n\x1b[1m  1\x1b[1;31m SELEC 1;\x1b[0m'
    assert native.error_position('SELECT 1;\n', 500) == ''


class FakeDiag(object):
    severity = 'ERROR'
    severity_nonlocalized = 'ERROR'
    message_primary = 'relation "missing" does not exist'
    message_detail = None
    message_hint = None
    statement_position = '15'
    context = None
    schema_name = None
    table_name = None
    column_name = None
    datatype_name = None
    constraint_name = None
    source_file = 'parse_relation.c'
    source_line = '1392'
    source_function = 'parserOpenTable'


class FakeError(Exception):
    pgcode = '42P01'
    diag = FakeDiag()


def test_database_error_and_logs_have_prismas_shape_and_parse_back():
    script = 'SELECT * FROM missing;\n'
    code, text = native.database_error(FakeError('boom'), script)
    assert code == '42P01'
    assert text.startswith('ERROR: relation "missing" does not exist\n\nPosition:\n')
    assert 'DbError { severity: "ERROR", parsed_severity: Some(Error), code: SqlState(E42P01)' in text
    assert 'position: Some(Original(15))' in text and 'file: Some("parse_relation.c"), line: Some(1392)' in text
    logs = native.failed_logs('20261101000000_x', code, text)
    assert logs.startswith('A migration failed to apply. New migrations cannot be applied before the error is '
                           'recovered from.')
    assert '\n\nMigration name: 20261101000000_x\n\nDatabase error code: 42P01\n\nDatabase error:\nERROR: ' in logs
    # The module's own reader finds the database's words in it, with the trace dropped.
    message = prisma.database_message(logs)
    assert 'relation "missing" does not exist' in message and 'apply_script' not in message
    parsed = prisma.parse_cli_error('Error: P3018\n\n' + native.P3018_MESSAGE % (
        native.RESOLVE_DOCS, '20261101000000_x', code, text))
    assert parsed['code'] == 'P3018' and parsed['migration'] == '20261101000000_x'
    assert parsed['database_message'].startswith('ERROR: relation "missing" does not exist')


def test_database_error_without_a_server_error():
    code, text = native.database_error(Exception('server closed the connection unexpectedly'), 'SELECT 1')
    assert code == 'none' and text == 'server closed the connection unexpectedly'


def test_refuse_failed_lists_failed_migrations_like_p3009():
    engine = native.PrismaNative({}, 'public', '/nonexistent')
    rows = [dict(migration_name='a', finished_at=None, rolled_back_at=None, started_at='2026-11-22 14:00:00+00',
                 logs='  Database error:\nERROR: x  '),
            dict(migration_name='b', finished_at='t', rolled_back_at=None, started_at='t', logs=None)]
    with pytest.raises(native.NativeError) as raised:
        engine.refuse_failed(rows)
    assert raised.value.code == 'P3009'
    assert 'The `a` migration started at 2026-11-22 14:00:00+00 failed with the following logs:\n' in raised.value.text
    engine.refuse_failed(rows[1:])


def test_other_provider_in_migration_lock_is_p3019(tmp_path):
    (tmp_path / 'migration_lock.toml').write_text('# Please do not edit this file manually\nprovider = "mysql"\n')
    engine = native.PrismaNative({}, 'public', str(tmp_path))
    with pytest.raises(native.NativeError) as raised:
        engine.check()
    assert raised.value.code == 'P3019' and '`mysql`' in raised.value.text
    (tmp_path / 'migration_lock.toml').write_text('provider = "postgresql"\n')
    engine.check()
