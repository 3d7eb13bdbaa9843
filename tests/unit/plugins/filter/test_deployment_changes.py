"""runbook.deploy.deployment_changes: a real run's facts and a check run's predictions summarised alike."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.runbook.deploy.plugins.filter.deployment_changes import deployment_changes

OFF = {'exists': True, 'enabled': False, 'rollout_percentage': 0}


def _flag(name, before, after):
    return {'name': name, 'backend': 'postgres', 'before': before, 'after': after}


def test_a_rollout_is_summarised_from_its_first_state_to_its_last_in_both_kinds_of_run():
    real = [_flag('dash', OFF, dict(OFF, enabled=True, rollout_percentage=25)),
            _flag('dash', dict(OFF, enabled=True, rollout_percentage=25), dict(OFF, enabled=True, rollout_percentage=100))]
    # A check run predicts each step from the state before the run: its steps do not chain.
    predicted = [_flag('dash', OFF, dict(OFF, enabled=True, rollout_percentage=25)),
                 _flag('dash', OFF, dict(OFF, enabled=True, rollout_percentage=100))]
    summaries = [deployment_changes({'flags_changed': flags, 'rollouts': ['dash']}) for flags in (real, predicted)]
    assert summaries[0] == summaries[1]
    assert summaries[0]['flags'] == {'dash': {'before': {'exists': True, 'enabled': False, 'rollout_percentage': 0},
                                              'after': {'exists': True, 'enabled': True, 'rollout_percentage': 100}}}


def test_switches_put_back_and_flags_outside_the_rollouts_are_not_changes():
    auto_sync_on = {'exists': True, 'enabled': True, 'rollout_percentage': None}
    flags = [_flag('auto_sync', auto_sync_on, dict(auto_sync_on, enabled=False)),
             _flag('dash', OFF, dict(OFF, enabled=True, rollout_percentage=50)),
             _flag('dash', dict(OFF, enabled=True, rollout_percentage=50), OFF),
             _flag('auto_sync', dict(auto_sync_on, enabled=False), auto_sync_on)]
    assert deployment_changes({'flags_changed': flags, 'rollouts': ['dash', 'auto_sync']})['flags'] == {}
    assert deployment_changes({'flags_changed': flags[:2], 'rollouts': ['dash']})['flags'].keys() == {'dash'}


def test_apps_backup_migrations_and_frontend():
    summary = deployment_changes({
        'built': ['app2', 'app1'],
        'apps': {'app1': {'api': 'reload', 'worker': 'none'}, 'app2': {'api': 'none'}, 'app3': None},
        'backup': {'db': 'app', 'reused': False, 's3_uri': 's3://b/k', 'path': '/x', 'planned': True},
        'migrate': {'applied': [{'name': '2_add', 'duration': None}, {'name': '3_more'}]},
        'frontend': {'uploaded_keys': ['index.html', 'assets/a.js'], 'deleted_keys': ['assets/old.js'], 'planned': True}})
    assert summary == {'built': ['app1', 'app2'], 'apps': {'app1': {'api': 'reload'}},
                       'backup': {'db': 'app', 'reused': False, 's3': True}, 'migrations': ['2_add', '3_more'],
                       'frontend': {'uploaded': ['assets/a.js', 'index.html'], 'deleted': ['assets/old.js']},
                       'flags': {}}


def test_a_run_that_did_nothing():
    assert deployment_changes({'backup': None, 'migrate': None, 'frontend': None}) == {
        'built': [], 'apps': {}, 'backup': None, 'migrations': [], 'frontend': None, 'flags': {}}


def test_not_a_mapping_is_a_clear_error():
    with pytest.raises(AnsibleFilterError, match="expects a dictionary of the run's facts, got list"):
        deployment_changes([])
