"""runbook.deploy.feature_flag against the stack's real PostgreSQL, Redis and Unleash, and a local HTTP flag service."""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid

import pytest
import redis as redis_lib
import requests

from helpers import REPO, assert_clear_failure, sql

sys.path.insert(0, os.path.join(REPO, 'tests', 'servers'))
from flag_service import FlagService  # noqa: E402  pylint: disable=wrong-import-position

MODULE = 'runbook.deploy.feature_flag'
TOKEN = 'flagtok-%s' % uuid.uuid4().hex


def unique(prefix):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:8])


# -- PostgreSQL ------------------------------------------------------------------------------

@pytest.fixture
def flags_db(make_db, stack):
    db = make_db('ff', rows=None)
    sql(stack, db, """
        CREATE TABLE feature_flags (id serial PRIMARY KEY, flag_name text NOT NULL, enabled boolean NOT NULL,
                                    rollout_percentage int);
        INSERT INTO feature_flags (flag_name, enabled, rollout_percentage) VALUES ('auto_sync', true, NULL),
                                                                                ('dashboard_v2', false, 0);
    """)
    return db


@pytest.fixture
def pg_flag(run_module, pg_conn_args, flags_db):
    def call(check=False, diff=False, **args):
        merged = dict(pg_conn_args, db=flags_db, backend='postgres')
        merged.update(args)
        return run_module(MODULE, check=check, diff=diff, **merged)
    return call


def pg_row(stack, db, name, table='feature_flags', columns='enabled, rollout_percentage', name_column='flag_name'):
    return sql(stack, db, 'SELECT %s FROM %s WHERE %s = %%s' % (columns, table, name_column), (name,))


def test_postgres_disable_is_checked_diffed_idempotent_and_restorable(pg_flag, stack, flags_db):
    planned = pg_flag(check=True, diff=True, name='auto_sync', state='disabled')
    assert planned['changed'] and not planned.get('failed'), planned
    assert planned['previous'] == dict(exists=True, enabled=True, rollout_percentage=None)
    assert planned['current'] == dict(exists=True, enabled=False, rollout_percentage=None)
    assert planned['diff']['before']['enabled'] is True and planned['diff']['after']['enabled'] is False
    assert pg_row(stack, flags_db, 'auto_sync') == [(True, None)], 'check mode wrote'
    done = pg_flag(name='auto_sync', state='disabled')
    assert done['changed'] and done['current']['enabled'] is False
    assert pg_row(stack, flags_db, 'auto_sync') == [(False, None)]
    again = pg_flag(name='auto_sync', state='disabled')
    assert not again['changed'] and again['previous'] == again['current']
    restored = pg_flag(name='auto_sync', state='enabled' if done['previous']['enabled'] else 'disabled')
    assert restored['changed'] and pg_row(stack, flags_db, 'auto_sync') == [(True, None)]
    assert pg_row(stack, flags_db, 'dashboard_v2') == [(False, 0)], 'other rows untouched'


def test_postgres_rollout_steps_and_create(pg_flag, stack, flags_db):
    for step in (10, 25, 50, 100):
        result = pg_flag(name='dashboard_v2', state='enabled', rollout_percentage=step, percentage_column='rollout_percentage')
        assert result['changed'], result
        assert pg_row(stack, flags_db, 'dashboard_v2') == [(True, step)]
    same = pg_flag(name='dashboard_v2', state='enabled', rollout_percentage=100, percentage_column='rollout_percentage')
    assert not same['changed']
    unset = pg_flag(name='dashboard_v2', state='enabled', percentage_column='rollout_percentage')
    assert not unset['changed'] and unset['current']['rollout_percentage'] == 100
    missing = pg_flag(name='new_checkout', state='enabled')
    assert_clear_failure(missing, "feature flag 'new_checkout' does not exist", "flag_name = 'new_checkout'", 'create=true')
    created = pg_flag(name='new_checkout', state='enabled', create=True, rollout_percentage=5,
                      percentage_column='rollout_percentage')
    assert created['changed'] and created['previous']['exists'] is False and created['current'] == dict(
        exists=True, enabled=True, rollout_percentage=5)
    assert pg_row(stack, flags_db, 'new_checkout') == [(True, 5)]


def test_postgres_identifiers_are_quoted_and_names_are_values(pg_flag, stack, flags_db):
    sql(stack, flags_db, '''
        CREATE SCHEMA ops;
        CREATE TABLE ops."Flag Table" ("Name" text, "is on" boolean, "pct; x" int);
        INSERT INTO ops."Flag Table" VALUES ('quote''s; DROP TABLE feature_flags; --', false, 0);
    ''')
    name = "quote's; DROP TABLE feature_flags; --"
    result = pg_flag(name=name, state='enabled', rollout_percentage=30, table='ops.Flag Table', name_column='Name',
                     enabled_column='is on', percentage_column='pct; x')
    assert result['changed'] and not result.get('failed'), result
    assert pg_row(stack, flags_db, name, table='ops."Flag Table"', columns='"is on", "pct; x"', name_column='"Name"') == [(True, 30)]
    assert pg_row(stack, flags_db, 'auto_sync') == [(True, None)]


@pytest.mark.parametrize('args,setup,fragments', [
    (dict(table='flags'), None, ['relation "flags" does not exist', 'check table']),
    (dict(enabled_column='active'), None, ['column "active" does not exist', 'enabled_column']),
    (dict(enabled_column='flag_name'), None, ["column 'flag_name'", 'not a boolean']),
    (dict(rollout_percentage=10), None, ['rollout_percentage needs percentage_column']),
    (dict(), "INSERT INTO feature_flags (flag_name, enabled) VALUES ('auto_sync', false)",
     ["2 rows of table 'feature_flags'", 'must be one row']),
    (dict(db='no_such_db_ff'), None, ['could not connect', 'no_such_db_ff']),
    (dict(redis_url='redis://127.0.0.1:1/0'), None, ['backend=postgres does not use redis_url (redis)']),
])
def test_postgres_bad_inputs(pg_flag, stack, flags_db, args, setup, fragments):
    if setup:
        sql(stack, flags_db, setup)
    result = pg_flag(name='auto_sync', state='disabled', **args)
    assert_clear_failure(result, *fragments)
    assert pg_row(stack, flags_db, 'auto_sync')[0] == (True, None)


# -- Redis -----------------------------------------------------------------------------------

@pytest.fixture
def redis_client(stack):
    client = redis_lib.Redis.from_url(stack['RUNBOOK_REDIS_URL'], decode_responses=True)
    created = []
    yield client, created
    for key in created:
        client.delete(key)
    client.close()


def test_redis_maintenance_mode_set_and_delete(run_module, stack, redis_client):
    client, created = redis_client
    key = unique('maintenance_mode')
    created.append(key)
    args = dict(backend='redis', redis_url=stack['RUNBOOK_REDIS_URL'], name=key, delete_when_disabled=True)
    planned = run_module(MODULE, check=True, state='enabled', **args)
    assert planned['changed'] and client.get(key) is None
    assert planned['previous'] == dict(exists=False, enabled=False, rollout_percentage=None, value=None)
    on = run_module(MODULE, state='enabled', **args)
    assert on['changed'] and client.get(key) == 'true'
    assert on['current'] == dict(exists=True, enabled=True, rollout_percentage=None, value='true')
    assert not run_module(MODULE, state='enabled', **args)['changed']
    off = run_module(MODULE, diff=True, state='disabled', **args)
    assert off['changed'] and client.exists(key) == 0
    assert off['diff']['before']['value'] == 'true' and off['diff']['after']['value'] is None
    assert not run_module(MODULE, state='disabled', **args)['changed']


def test_redis_custom_key_and_values(run_module, stack, redis_client):
    client, created = redis_client
    key = unique('flags:checkout')
    created.append(key)
    client.set(key, 'garbage')
    args = dict(backend='redis', redis_url=stack['RUNBOOK_REDIS_URL'], name='checkout', key=key,
                enabled_value='on', disabled_value='off')
    result = run_module(MODULE, state='disabled', **args)
    assert result['changed'] and result['previous'] == dict(exists=True, enabled=None, rollout_percentage=None, value='garbage')
    assert client.get(key) == 'off'
    assert not run_module(MODULE, state='disabled', **args)['changed']
    assert run_module(MODULE, state='enabled', **args)['current']['value'] == 'on' and client.get(key) == 'on'


def test_redis_failures_are_clear_and_keep_the_password(run_module):
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    result = run_module(MODULE, backend='redis', redis_url='redis://:hunter2pw@127.0.0.1:%d/0' % port, name='m',
                        state='enabled', timeout=2)
    assert_clear_failure(result, 'cannot reach Redis at redis://127.0.0.1:%d/0' % port, 'check redis_url')
    assert 'hunter2pw' not in json.dumps(result)
    result = run_module(MODULE, backend='redis', redis_url='http://127.0.0.1:%d' % port, name='m', state='enabled')
    assert_clear_failure(result, 'redis_url is not a Redis URL')
    result = run_module(MODULE, backend='redis', redis_url='redis://127.0.0.1:%d' % port, name='m', state='enabled',
                        rollout_percentage=10)
    assert_clear_failure(result, 'rollout_percentage is not supported by backend=redis')


# -- Unleash ---------------------------------------------------------------------------------

@pytest.fixture
def unleash(stack):
    base, token = stack['RUNBOOK_UNLEASH_URL'], stack['RUNBOOK_UNLEASH_TOKEN']
    session = requests.Session()
    session.headers['Authorization'] = token
    names = []

    def feature(create=True):
        name = unique('ff')
        names.append(name)
        if create:
            session.post('%s/api/admin/projects/default/features' % base, json={'name': name, 'type': 'release'}).raise_for_status()
        return name

    def env(name, environment='production'):
        response = session.get('%s/api/admin/projects/default/features/%s/environments/%s' % (base, name, environment))
        response.raise_for_status()
        return response.json()

    def add_strategy(name, strategy, environment='production'):
        session.post('%s/api/admin/projects/default/features/%s/environments/%s/strategies' % (base, name, environment),
                     json=strategy).raise_for_status()

    feature.env = env
    feature.add_strategy = add_strategy
    feature.args = dict(backend='unleash', api_url=base, api_token=token)
    yield feature
    for name in names:
        session.delete('%s/api/admin/projects/default/features/%s' % (base, name))
        session.delete('%s/api/admin/archive/%s' % (base, name))


def rollouts(environment):
    return [(s['name'], s['parameters'].get('rollout')) for s in environment['strategies']]


def test_unleash_gradual_rollout(run_module, unleash):
    name = unleash()
    args = dict(unleash.args, name=name, environment='production')
    planned = run_module(MODULE, check=True, state='enabled', rollout_percentage=10, **args)
    assert planned['changed'] and planned['previous'] == dict(exists=True, enabled=False, rollout_percentage=None)
    assert planned['current'] == dict(exists=True, enabled=True, rollout_percentage=10)
    assert unleash.env(name)['enabled'] is False and unleash.env(name)['strategies'] == []
    for step in (10, 25, 50, 100):
        result = run_module(MODULE, state='enabled', rollout_percentage=step, **args)
        assert result['changed'] and result['current'] == dict(exists=True, enabled=True, rollout_percentage=step), result
        environment = unleash.env(name)
        assert environment['enabled'] is True and rollouts(environment) == [('flexibleRollout', str(step))]
    strategy_id = unleash.env(name)['strategies'][0]['id']
    assert not run_module(MODULE, state='enabled', rollout_percentage=100, **args)['changed']
    assert not run_module(MODULE, state='enabled', **args)['changed']
    off = run_module(MODULE, diff=True, state='disabled', **args)
    assert off['changed'] and off['previous']['enabled'] is True and off['current'] == dict(
        exists=True, enabled=False, rollout_percentage=100)
    assert off['diff']['before']['enabled'] is True
    environment = unleash.env(name)
    assert environment['enabled'] is False and environment['strategies'][0]['id'] == strategy_id
    assert unleash.env(name, 'development')['enabled'] is False, 'only the given environment changes'


def test_unleash_missing_feature_create_and_default_rollout(run_module, unleash):
    name = unleash(create=False)
    args = dict(unleash.args, name=name, environment='development')
    missing = run_module(MODULE, state='enabled', **args)
    assert_clear_failure(missing, "feature flag '%s' does not exist" % name, "project 'default'", 'create=true')
    created = run_module(MODULE, state='enabled', create=True, **args)
    assert created['changed'] and created['previous']['exists'] is False
    assert created['current'] == dict(exists=True, enabled=True, rollout_percentage=100)
    assert rollouts(unleash.env(name, 'development')) == [('flexibleRollout', '100')]
    assert unleash.env(name)['enabled'] is False


def test_unleash_errors(run_module, unleash):
    name = unleash()
    result = run_module(MODULE, state='enabled', name=name, environment='staging', **unleash.args)
    assert_clear_failure(result, "Unleash has no environment 'staging'")
    args = dict(unleash.args, api_token='*:*.wrong-token')
    result = run_module(MODULE, state='enabled', name=name, environment='production', **args)
    assert_clear_failure(result, 'refused api_token', 'HTTP 401')
    result = run_module(MODULE, state='enabled', name=name, environment='production', project='nosuchproject', **unleash.args)
    assert_clear_failure(result, 'set project')
    assert unleash.env(name)['enabled'] is False
    unleash.add_strategy(name, {'name': 'default', 'parameters': {}})
    result = run_module(MODULE, state='enabled', name=name, environment='production', rollout_percentage=10, **unleash.args)
    assert_clear_failure(result, 'has the strategies default', 'no flexibleRollout', 'leave rollout_percentage unset')
    assert len(unleash.env(name)['strategies']) == 1


# -- HTTP flag service -----------------------------------------------------------------------

@pytest.fixture
def flag_service():
    service = FlagService(TOKEN).start()
    yield service
    service.stop()


def test_http_rollout_check_mode_and_idempotence(run_module, flag_service):
    flag_service.flags['dashboard-v2'] = {'enabled': False, 'rolloutPercentage': 0}
    args = dict(backend='http', api_url=flag_service.url + '/api/v1/feature-flags/{name}', api_token=TOKEN,
                name='dashboard-v2')
    planned = run_module(MODULE, check=True, state='enabled', rollout_percentage=10, **args)
    assert planned['changed'] and flag_service.writes == []
    for step in (10, 25, 50, 100):
        result = run_module(MODULE, state='enabled', rollout_percentage=step, **args)
        assert result['changed'] and result['current'] == dict(exists=True, enabled=True, rollout_percentage=step)
    assert [body for dummy, dummy_path, body in flag_service.writes] == [
        {'enabled': True, 'rolloutPercentage': p} for p in (10, 25, 50, 100)]
    assert not run_module(MODULE, state='enabled', rollout_percentage=100, **args)['changed']
    assert len(flag_service.writes) == 4
    assert TOKEN not in json.dumps(result)


def test_http_nested_fields_put_create_and_dropped_writes(run_module, flag_service):
    args = dict(backend='http', api_url=flag_service.url + '/nested/{name}', write_method='PUT', name='beta',
                headers={'Authorization': 'Bearer ' + TOKEN}, enabled_field='data.flag.on',
                percentage_field='data.flag.percent')
    missing = run_module(MODULE, state='enabled', **args)
    assert_clear_failure(missing, "feature flag 'beta' does not exist", 'answered 404', 'create=true')
    created = run_module(MODULE, state='enabled', rollout_percentage=20, create=True, **args)
    assert created['changed'] and created['current'] == dict(exists=True, enabled=True, rollout_percentage=20)
    assert flag_service.flags['beta'] == {'enabled': True, 'rolloutPercentage': 20}
    assert flag_service.writes[-1] == ('PUT', '/nested/beta', {'data': {'flag': {'on': True, 'percent': 20}}})
    assert TOKEN not in json.dumps(created) and created['invocation']['module_args']['headers'] == {'Authorization': '********'}
    flag_service.flags['gamma'] = {'enabled': False, 'rolloutPercentage': 0}
    dropped = run_module(MODULE, backend='http', api_url=flag_service.url + '/api/v1/feature-flags/{name}',
                         write_url=flag_service.url + '/ignoring/{name}', api_token=TOKEN, name='gamma', state='enabled')
    assert_clear_failure(dropped, 'still shows enabled=False', 'write_method, write_url')


@pytest.mark.parametrize('args,fragments', [
    (dict(api_token='wrong'), ['refused (HTTP 401)', 'api_token']),
    (dict(enabled_field='state'), ["returned no 'state' field", 'set enabled_field', 'enabled, name, rolloutPercentage']),
    (dict(rollout_percentage=150), ['rollout_percentage must be between 0 and 100']),
    (dict(api_url='ftp://flags.example.com/x'), ["api_url 'ftp://flags.example.com/x' must start with http://"]),
    (dict(environment='production'), ['backend=http does not use environment (unleash)']),
    (dict(timeout=0), ['timeout must be more than 0 seconds']),
    (dict(percentage_field='a..b'), ["'a..b'"]),
    (dict(write_method='PO\r\nST'), ["write_method", 'is not an HTTP method']),
    (dict(api_url='http://127.0.0.1:1/api/v1/caf\u00e9/{name}', timeout=1), ['refused']),
])
def test_http_bad_inputs(run_module, flag_service, args, fragments):
    flag_service.flags['x'] = {'enabled': False, 'rolloutPercentage': 0}
    merged = dict(backend='http', api_url=flag_service.url + '/api/v1/feature-flags/{name}', api_token=TOKEN, name='x',
                  state='enabled')
    merged.update(args)
    assert_clear_failure(run_module(MODULE, **merged), *fragments)
    assert flag_service.writes == []


@pytest.mark.parametrize('args,fragments', [
    (dict(backend='unleash', api_url='http://127.0.0.1:1', api_token='unleash-admin-token'),
     ['backend is unleash', 'environment']),
    (dict(backend='redis'), ['backend is redis', 'redis_url']),
    (dict(backend='redis', redis_url='redis://127.0.0.1:1', enabled_value='x', disabled_value='x'),
     ["enabled_value and disabled_value are both 'x'"]),
    (dict(backend='postgres', login_host='127.0.0.1'), ['no database given']),
    (dict(backend='etcd'), ['value of backend must be one of']),
])
def test_option_errors(run_module, args, fragments):
    assert_clear_failure(run_module(MODULE, name='f', state='enabled', **args), *fragments)


# Header values http.client cannot send (a line break would also inject a header), and names that are not tokens.
@pytest.mark.parametrize('args,fragments', [
    (dict(headers={'X-Trace': 'a\r\nX-Injected: 1'}), ['headers', "'X-Trace'", 'line break']),
    (dict(headers={'X-Trace': 'a\nb'}), ['headers', "'X-Trace'", 'line break']),
    (dict(headers={'X-Trace': 'snow \u2603'}), ['headers', "'X-Trace'", 'Latin-1']),
    (dict(headers={'X-Trace': 'a\x00b'}), ['headers', "'X-Trace'", 'control character']),
    (dict(headers={'X Trace:': 'a'}), ['headers', "'X Trace:'", 'not a valid header name']),
    (dict(api_token=TOKEN + '\r\nX-Injected: 1'), ['api_token', 'line break']),
    (dict(api_token=TOKEN + '\u2603'), ['api_token', 'Latin-1']),
    (dict(timeout='1e308'), ['timeout']), (dict(timeout='nan'), ['timeout']), (dict(timeout='inf'), ['timeout']),
    (dict(timeout='-1'), ['timeout']),
], ids=['crlf', 'lf', 'non-latin-1', 'nul', 'name', 'token-crlf', 'token-non-latin-1', 'timeout-1e308', 'timeout-nan',
        'timeout-inf', 'timeout-negative'])
def test_http_bad_header_or_timeout_fails_naming_the_option(run_module, flag_service, args, fragments):
    flag_service.flags['x'] = {'enabled': False, 'rolloutPercentage': 0}
    merged = dict(backend='http', api_url=flag_service.url + '/api/v1/feature-flags/{name}', api_token=TOKEN, name='x',
                  state='enabled')
    merged.update(args)
    result = run_module(MODULE, **merged)
    assert_clear_failure(result, *fragments)
    assert 'unexpectedly' not in result['msg']
    assert TOKEN not in json.dumps(result)
    assert flag_service.writes == []
