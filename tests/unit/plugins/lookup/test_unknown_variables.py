"""runbook.deploy.unknown_variables: misspelt role variables are found, with a suggestion; the example inventories,
the profiles and the local inventories have none (no false alarm on a real inventory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ansible_collections.runbook.deploy.plugins.lookup.unknown_variables import known_names, unknown

REPO = Path(__file__).resolve().parents[4]


def test_misspellings_are_reported_with_the_closest_known_name():
    found = unknown(['backup_s3_buket', 'smoke_check', 'migrate_tol', 'backup_s3_bucket', 'smoke_checks',
                     'sample_app_port', 'runbook_version', 'ansible_host', '__backend_release', 'watch_zzz_qqq'])
    assert found == ['backup_s3_buket (did you mean backup_s3_bucket?)', 'migrate_tol (did you mean migrate_tool?)',
                     'smoke_check (did you mean smoke_checks?)', 'watch_zzz_qqq']


def test_the_users_own_variables_can_be_allowed():
    assert unknown(['backend_team_slack_channel', 'smoke_check'], allow=['backend_team_slack_channel']) == [
        'smoke_check (did you mean smoke_checks?)']


def test_known_names_come_from_the_roles_and_playbooks():
    known = known_names()
    # Options, defaults, facts the roles set and variables the playbooks pass are all known.
    for name in ('backup_s3_bucket', 'smoke_fail_after_identical', 'backend_error_log_lines', 'smoke_result',
                 'backup_taken', 'deployment_phase_event', 'flags_rollout_name', 'rollback_migrations_version'):
        assert name in known, name


def _inventory_names():
    files = list((REPO / 'inventories').rglob('*.yml')) + list((REPO / 'inventories').rglob('*.yml.example'))
    names = set()
    for path in files:
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict):
            names.update(data)
            # hosts.yml: the variables of groups and hosts
            for match in re.finditer(r'^\s+([a-z][a-z0-9_]*):', path.read_text(), re.M):
                names.add(match.group(1))
    # Commented-out settings of the example inventories are there to be uncommented.
    for path in files:
        names.update(re.findall(r'^#\s*([a-z][a-z0-9_]*):', path.read_text(), re.M))
    return names


def test_no_false_alarm_on_the_inventories_and_profiles():
    assert unknown(_inventory_names()) == []


@pytest.mark.parametrize('text', ['backup_s3_bucket_', '_backup_x'])
def test_odd_names_are_not_reported(text):
    assert unknown([text]) == []
