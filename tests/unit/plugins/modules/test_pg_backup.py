"""pg_backup's pure helpers; the real module runs in tests/integration/plugins/modules/test_pg_backup.py."""

from __future__ import annotations

import pytest

from ansible_collections.runbook.deploy.plugins.modules import pg_backup


@pytest.mark.parametrize('base', ['app', 'a' * 63, 'é' * 40])
def test_derived_names_fit_postgres_identifiers(base):
    name = pg_backup.derived_name(base, '__pre_restore_20261122t140000z')
    assert len(name.encode('utf-8')) <= 63
    assert name.endswith('__pre_restore_20261122t140000z')
    assert base.startswith(name[:-len('__pre_restore_20261122t140000z')])


def test_short_names_are_kept_whole():
    assert pg_backup.derived_name('app', '__restore_x') == 'app__restore_x'
