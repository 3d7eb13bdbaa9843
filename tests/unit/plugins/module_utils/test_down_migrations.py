"""The down path prisma_migrate and flyway_migrate share: what a down script may contain."""

from __future__ import annotations

import pytest

from ansible_collections.runbook.deploy.plugins.module_utils import down_migrations as down


@pytest.mark.parametrize('script, word', [
    ('BEGIN;\nDROP TABLE t;\nCOMMIT;\n', 'BEGIN'),
    ('DROP TABLE t;\ncommit;\n', 'COMMIT'),
    ('START TRANSACTION;\nDROP TABLE t;\nEND;\n', 'START'),
    ('DROP TABLE t;\nROLLBACK;\n', 'ROLLBACK'),
])
def test_transaction_control_is_refused_before_anything_runs(tmp_path, script, word):
    path = tmp_path / 'rollback_V2.sql'
    path.write_text(script)
    with pytest.raises(down.DownMigrationError, match='controls transactions itself \\(%s\\)' % word):
        down.read_script('V2__b.sql', str(path))


def test_what_only_looks_like_transaction_control_is_accepted(tmp_path):
    script = ("-- COMMIT; is written in a comment\nSAVEPOINT a;\nUPDATE t SET note = 'BEGIN; COMMIT;';\n"
              'DO $body$ BEGIN PERFORM 1; END $body$;\nROLLBACK TO SAVEPOINT a;\n'
              'CREATE FUNCTION f() RETURNS int LANGUAGE SQL BEGIN ATOMIC SELECT 1; END;\n/* END; */\n')
    path = tmp_path / 'down.sql'
    path.write_bytes(b'\xef\xbb\xbf' + script.encode('utf-8'))
    assert down.read_script('m', str(path)) == script, 'the byte order mark is dropped, the rest kept'


def test_a_script_that_is_not_utf8_or_empty_is_refused_clearly(tmp_path):
    latin = tmp_path / 'latin1.sql'
    latin.write_bytes('UPDATE t SET name = \'café\';\n'.encode('latin-1'))
    with pytest.raises(down.DownMigrationError, match='is not UTF-8 .*nothing was rolled back'):
        down.read_script('m', str(latin))
    empty = tmp_path / 'empty.sql'
    empty.write_text('\n  \n')
    with pytest.raises(down.DownMigrationError, match='is empty'):
        down.read_script('m', str(empty))
    with pytest.raises(down.DownMigrationError, match='cannot read'):
        down.read_script('m', str(tmp_path / 'missing.sql'))
