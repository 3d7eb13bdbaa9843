"""Expectation matching and the failure table of smoke_test (plugins/module_utils/smoke.py)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.runbook.deploy.plugins.module_utils import smoke

DOC = {'status': 'healthy', 'ready': True, 'count': 3, 'ratio': 1.0,
       'checks': {'db': {'status': 'ok'}}, 'items': [{'id': 1, 'tags': ['a', 'b']}, {'id': 2}], 'a.b': 'dotted'}


@pytest.mark.parametrize('path,tokens', [
    ('status', ['status']),
    ('checks.db.status', ['checks', 'db', 'status']),
    ('items[0].tags[-1]', ['items', 0, 'tags', -1]),
    ('["a.b"]', ['a.b']),
    ("$.items[1]['id']", ['items', 1, 'id']),
])
def test_paths_are_parsed(path, tokens):
    assert smoke.parse_path(path) == tokens


@pytest.mark.parametrize('path', ['', 'a..b', 'items[x]', 'a[0'])
def test_bad_paths_are_refused_with_the_path_named(path):
    with pytest.raises(smoke.ExpectationError) as err:
        smoke.parse_path(path)
    assert repr(path)[1:-1] in str(err.value) or 'empty' in str(err.value)


def test_values_are_found_by_path():
    assert smoke.get_path(DOC, 'checks.db.status') == 'ok'
    assert smoke.get_path(DOC, 'items[0].tags[1]') == 'b'
    assert smoke.get_path(DOC, 'items[-1].id') == 2
    assert smoke.get_path(DOC, '["a.b"]') == 'dotted'
    for missing in ('nope', 'items[5]', 'status.x', 'checks.db.status.deeper', 'items.id'):
        assert smoke.get_path(DOC, missing) is smoke._MISSING


def test_json_equality_keeps_booleans_apart_from_numbers():
    assert smoke.same(1, 1.0) and smoke.same(True, True) and smoke.same(None, None)
    assert not smoke.same(True, 1) and not smoke.same(1, True) and not smoke.same('1', 1) and not smoke.same(0, False)


def test_subset_matching():
    assert smoke.subset_mismatches({'status': 'healthy', 'checks': {'db': {}}}, DOC) == []
    assert smoke.subset_mismatches({'items': [{'id': 2}, {'tags': ['b']}]}, DOC) == []
    assert smoke.subset_mismatches({'status': 'down', 'missing': 1, 'checks': []}, DOC) == [
        '$.status is "healthy", expected "down"', '$.missing is missing', '$.checks is {"db": {"status": "ok"}}, expected a list']
    assert smoke.subset_mismatches({'items': [{'id': 3}]}, DOC) == ['$.items has no element matching {"id": 3}']
    assert smoke.subset_mismatches({'a': 1}, [1]) == ['$ is [1], expected an object']


def test_path_matching():
    assert smoke.path_mismatches({'checks.db.status': 'ok', 'count': 3.0, 'items[0]': {'id': 1}}, DOC) == []
    assert smoke.path_mismatches({'ready': 'true', 'nope.x': None}, DOC) == [
        'ready is true, expected "true"', 'nope.x is missing']


def test_body_expectations():
    text = json.dumps(DOC)
    assert smoke.body_mismatches(text, {'status': 'healthy'}, {'count': 3}, smoke.compile_regex('heal+thy', 'c')) == []
    problems = smoke.body_mismatches('<html>oops</html>', {'status': 'healthy'}, None, smoke.compile_regex('ok', 'c'))
    assert problems[0].startswith('body does not match /ok/') and problems[1].startswith('body is not JSON')
    assert smoke.body_mismatches('anything') == []


def test_bad_regex_names_the_check():
    with pytest.raises(smoke.ExpectationError, match="check 'api': expect_text is not a valid regular expression"):
        smoke.compile_regex('(', 'api')


def test_table_is_aligned_and_long_cells_are_cut():
    table = smoke.render_table([dict(name='api', why='status 500'), dict(name='a much longer name', why='x' * 300)],
                               [('name', 'check'), ('status', 'status'), ('why', 'why')])
    lines = table.splitlines()
    assert lines[0].startswith('check              | status | why')
    assert set(lines[1]) == set('-+')
    assert lines[2].startswith('api                | -      | status 500')
    assert lines[3].endswith('...') and len(lines[3]) < 150
    assert len({line.index('|') for line in lines if '|' in line}) == 1
