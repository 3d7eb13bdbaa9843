"""Backend-independent logic of feature_flag (plugins/module_utils/feature_flags.py)."""

from __future__ import annotations

import pytest

from ansible_collections.runbook.deploy.plugins.module_utils import feature_flags as flags


@pytest.mark.parametrize('value,expected', [(None, None), (0, 0), (25, 25), ('50', 50), (100.0, 100), ('10.0', 10)])
def test_percentages_are_read_from_numbers_and_strings(value, expected):
    assert flags.parse_percentage(value, 'x') == expected


@pytest.mark.parametrize('value', [True, 'abc', 101, -1, 12.5, [10]])
def test_bad_percentages_name_where_they_came_from(value):
    with pytest.raises(flags.FlagError, match='column rollout'):
        flags.parse_percentage(value, 'column rollout')


def test_satisfied_ignores_an_unset_percentage():
    current = flags.state(True, True, 25)
    assert flags.satisfied(current, flags.state(True, True, None))
    assert flags.satisfied(current, flags.state(True, True, 25))
    assert not flags.satisfied(current, flags.state(True, True, 50))
    assert not flags.satisfied(current, flags.state(True, False, None))
    assert not flags.satisfied(flags.state(False, None), flags.state(True, False, None)), 'a missing flag is created'


def test_predict_keeps_the_percentage_unless_given():
    assert flags.predict(flags.state(True, False, 10), flags.state(True, True, None)) == flags.state(True, True, 10)
    assert flags.predict(flags.state(False, None), flags.state(True, False, 5)) == flags.state(True, False, 5)


def test_write_bodies_nest_dotted_fields():
    assert flags.set_path({'keep': 1}, 'data.flag.on', True) == {'keep': 1, 'data': {'flag': {'on': True}}}
    assert flags.set_path({}, 'enabled', False) == {'enabled': False}
    with pytest.raises(flags.FlagError, match='list index'):
        flags.set_path({}, 'items[0].on', True)


def test_redis_states_by_value():
    backend = flags.RedisBackend.__new__(flags.RedisBackend)
    backend.enabled_value, backend.disabled_value, backend.delete_when_disabled = 'on', 'off', True
    assert backend.wanted_value(True) == 'on' and backend.wanted_value(False) is None
    assert backend.satisfied(flags.state(False, False, value=None), flags.state(True, False))
    assert not backend.satisfied(flags.state(True, None, value='garbage'), flags.state(True, False))
    assert backend.predict(flags.state(True, True, value='on'), flags.state(True, False)) == flags.state(
        False, False, value=None)
    backend.delete_when_disabled = False
    assert backend.wanted_value(False) == 'off'
