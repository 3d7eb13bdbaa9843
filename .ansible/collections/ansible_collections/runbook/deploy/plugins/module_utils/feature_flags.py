# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Feature flag backends of runbook.deploy.feature_flag: a PostgreSQL table, a Redis key, Unleash, a JSON API.

Every backend reads a flag into the same state dict::

    {'exists': bool, 'enabled': bool or None, 'rollout_percentage': int or None}

(the Redis backend adds the raw ``value``), and writes a wanted state.  The module compares, so a
backend never decides whether something changed.  Errors are FlagError with a message for fail_json.
"""

from __future__ import annotations

import json

from urllib.parse import quote

from ansible_collections.runbook.deploy.plugins.module_utils import http_client as http
from ansible_collections.runbook.deploy.plugins.module_utils import postgres as pg
from ansible_collections.runbook.deploy.plugins.module_utils import smoke

try:
    import redis
    HAS_REDIS = True
except ImportError:
    redis = None
    HAS_REDIS = False


class FlagError(Exception):
    """A feature flag step failed; the message is ready for fail_json."""


def state(exists, enabled, rollout_percentage=None, **extra):
    result = dict(exists=exists, enabled=enabled, rollout_percentage=rollout_percentage)
    result.update(extra)
    return result


def parse_percentage(value, where):
    """An int 0-100 from an int, a float with no fraction or a numeric string; FlagError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise FlagError('%s holds %r, not a percentage' % (where, value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FlagError('%s holds %r, not a percentage' % (where, value))
    if number != int(number) or not 0 <= number <= 100:
        raise FlagError('%s holds %r, not a whole percentage between 0 and 100' % (where, value))
    return int(number)


def satisfied(current, wanted):
    """Whether current already is the wanted state (a percentage left unset is not compared)."""
    if not current['exists'] or current['enabled'] != wanted['enabled']:
        return False
    return wanted['rollout_percentage'] is None or current['rollout_percentage'] == wanted['rollout_percentage']


def predict(current, wanted):
    """The state a write would leave (for check mode)."""
    percentage = wanted['rollout_percentage']
    return state(True, wanted['enabled'], current['rollout_percentage'] if percentage is None else percentage)


# -- PostgreSQL --------------------------------------------------------------------------------

class PostgresBackend(object):
    """A row of a flags table: name column, boolean enabled column, optional percentage column."""

    def __init__(self, params):
        self.conn = pg.connection_from_params(params)
        self.table = params['table']
        self.name_column = params['name_column']
        self.enabled_column = params['enabled_column']
        self.percentage_column = params['percentage_column']
        self.name = params['name']
        self.connection = None

    def describe(self):
        return "table '%s' in %s" % (self.table, pg.describe(self.conn))

    def open(self):
        if self.connection is None:
            self.connection = pg.connect(self.conn, autocommit=False)
        return self.connection

    def close(self):
        if self.connection is not None:
            self.connection.rollback()
            self.connection.close()
            self.connection = None

    def quoted_table(self):
        parts = self.table.split('.')
        if len(parts) > 2 or not all(parts):
            raise FlagError("table '%s' must be a table name or schema.table" % self.table)
        return '.'.join(pg.quote_ident(self.connection, part) for part in parts)

    def quote(self, name):
        return pg.quote_ident(self.connection, name)

    def columns(self):
        q = self.quote
        selected = [q(self.enabled_column)]
        if self.percentage_column:
            selected.append(q(self.percentage_column))
        return q, selected

    def _execute(self, cursor, statement, args):
        try:
            cursor.execute(statement, args)
        except pg.psycopg2.Error as exc:
            self.connection.rollback()
            text = str(exc).strip().splitlines()[0]
            hint = ''
            if getattr(exc, 'pgcode', None) == '42P01':
                hint = ' (check table, and that the flags table exists in this database)'
            elif getattr(exc, 'pgcode', None) == '42703':
                hint = ' (check name_column, enabled_column and percentage_column)'
            raise FlagError('reading or writing flag %r in %s failed: %s%s' % (self.name, self.describe(), text, hint))

    def read(self, lock=False):
        self.open()
        q, selected = self.columns()
        statement = 'SELECT %s FROM %s WHERE %s = %%s%s' % (
            ', '.join(selected), self.quoted_table(), q(self.name_column), ' FOR UPDATE' if lock else '')
        with self.connection.cursor() as cursor:
            self._execute(cursor, statement, (self.name,))
            rows = cursor.fetchall()
        if len(rows) > 1:
            raise FlagError("%d rows of %s have %s = '%s'; the flag must be one row"
                            % (len(rows), self.describe(), self.name_column, self.name))
        if not rows:
            return state(False, None)
        enabled = rows[0][0]
        if enabled is not None and not isinstance(enabled, bool):
            raise FlagError("column '%s' of %s holds %r, not a boolean; point enabled_column at a boolean column"
                            % (self.enabled_column, self.describe(), enabled))
        percentage = None
        if self.percentage_column:
            percentage = parse_percentage(rows[0][1], "column '%s' of flag '%s'" % (self.percentage_column, self.name))
        return state(True, enabled, percentage)

    def write(self, wanted, current):
        """Lock the row, re-read it (another writer may have been first), write; return the state written."""
        q, dummy = self.columns()
        locked = self.read(lock=True)
        if locked['exists'] != current['exists']:
            current = locked
        with self.connection.cursor() as cursor:
            values = [(self.enabled_column, wanted['enabled'])]
            if self.percentage_column and wanted['rollout_percentage'] is not None:
                values.append((self.percentage_column, wanted['rollout_percentage']))
            if current['exists']:
                statement = 'UPDATE %s SET %s WHERE %s = %%s' % (
                    self.quoted_table(), ', '.join('%s = %%s' % q(c) for c, dummy_v in values), q(self.name_column))
                self._execute(cursor, statement, [v for dummy_c, v in values] + [self.name])
            else:
                columns = [self.name_column] + [c for c, dummy_v in values]
                statement = 'INSERT INTO %s (%s) VALUES (%s)' % (
                    self.quoted_table(), ', '.join(q(c) for c in columns), ', '.join(['%s'] * len(columns)))
                self._execute(cursor, statement, [self.name] + [v for dummy_c, v in values])
        self.connection.commit()
        return self.read()


# -- Redis -------------------------------------------------------------------------------------

class RedisBackend(object):
    """A string key: enabled_value / disabled_value, or no key when disabled (delete_when_disabled)."""

    def __init__(self, params):
        self.key = params['key'] or params['name']
        self.enabled_value = params['enabled_value']
        self.disabled_value = params['disabled_value']
        self.delete_when_disabled = params['delete_when_disabled']
        self.url = params['redis_url']
        self.timeout = params['timeout']
        try:
            self.client = redis.Redis.from_url(self.url, socket_timeout=self.timeout,
                                               socket_connect_timeout=self.timeout, decode_responses=True)
        except ValueError as exc:
            raise FlagError('redis_url is not a Redis URL (%s); expected redis://[:password@]host:port/db or rediss://...'
                            % http.Redactor([self.url])(str(exc)))
        self.where = http.strip_credentials(self.url)

    def close(self):
        self.client.close()

    def _call(self, what, *args):
        try:
            return getattr(self.client, what)(*args)
        except redis.exceptions.AuthenticationError as exc:
            raise FlagError('Redis at %s refused the credentials: %s (check the password in redis_url)' % (self.where, exc))
        except redis.exceptions.ConnectionError as exc:
            raise FlagError('cannot reach Redis at %s: %s (check redis_url and that Redis is running)' % (self.where, exc))
        except redis.exceptions.RedisError as exc:
            raise FlagError("Redis %s of key '%s' at %s failed: %s" % (what.upper(), self.key, self.where, exc))

    def read(self):
        value = self._call('get', self.key)
        if value is None:
            return state(False, False if self.delete_when_disabled else None, value=None)
        if value == self.enabled_value:
            return state(True, True, value=value)
        if value == self.disabled_value:
            return state(True, False, value=value)
        return state(True, None, value=value)

    def satisfied(self, current, wanted):
        return current['value'] == self.wanted_value(wanted['enabled'])

    def predict(self, current, wanted):
        value = self.wanted_value(wanted['enabled'])
        return state(value is not None, wanted['enabled'], value=value)

    def wanted_value(self, enabled):
        if enabled:
            return self.enabled_value
        return None if self.delete_when_disabled else self.disabled_value

    def write(self, wanted, current):
        value = self.wanted_value(wanted['enabled'])
        if value is None:
            self._call('delete', self.key)
        else:
            self._call('set', self.key, value)
        return self.read()


# -- Unleash -----------------------------------------------------------------------------------

class UnleashBackend(object):
    """A feature in one project and environment of the Unleash admin API; rollout = flexibleRollout."""

    def __init__(self, params, context):
        self.base = params['api_url'].rstrip('/')
        self.token = params['api_token']
        self.project = params['project']
        self.environment = params['environment']
        self.name = params['name']
        self.timeout = params['timeout']
        self.context = context
        self.stickiness = params['stickiness']
        self.feature_url = '%s/api/admin/projects/%s/features/%s' % (
            self.base, quote(self.project, safe=''), quote(self.name, safe=''))
        self.env_url = '%s/environments/%s' % (self.feature_url, quote(self.environment, safe=''))
        self.strategy = None
        self.other_strategies = []

    def close(self):
        pass

    def call(self, method, url, payload=None, ok=(200, 201, 202, 204), step=None):
        response, parsed = http.json_request(method, url, headers={'Authorization': self.token}, payload=payload,
                                             timeout=self.timeout, context=self.context)
        if response.status in ok:
            return response, parsed
        message = parsed.get('message') if isinstance(parsed, dict) else response.text[:300]
        if response.status in (401, 403):
            raise FlagError('Unleash at %s refused api_token (HTTP %d: %s); use an admin API token'
                            % (self.base, response.status, message))
        raise FlagError('Unleash %s failed (HTTP %d): %s' % (step or '%s %s' % (method, url), response.status, message))

    def read(self):
        response, parsed = self.call('GET', self.feature_url, ok=(200, 404), step='reading the feature')
        if response.status == 404:
            message = (parsed or {}).get('message', '') if isinstance(parsed, dict) else response.text[:200]
            if 'but there' in message:
                raise FlagError('Unleash: %s; set project' % message)
            self.strategy = None
            return state(False, None)
        environments = dict((e.get('name'), e) for e in parsed.get('environments') or [])
        if self.environment not in environments:
            raise FlagError("Unleash has no environment '%s' for feature '%s' in project '%s'; set environment to one of: %s"
                            % (self.environment, self.name, self.project, ', '.join(sorted(environments)) or 'none'))
        parsed = environments[self.environment]
        strategies = [s for s in parsed.get('strategies') or [] if s.get('name') == 'flexibleRollout' and not s.get('disabled')]
        if len(strategies) > 1:
            raise FlagError("feature '%s' has %d flexibleRollout strategies in environment '%s' (%s); keep one for "
                            "rollout_percentage to manage" % (self.name, len(strategies), self.environment,
                                                              ', '.join(s['id'] for s in strategies)))
        self.strategy = strategies[0] if strategies else None
        self.other_strategies = [s.get('name') for s in parsed.get('strategies') or []
                                 if s.get('name') != 'flexibleRollout' and not s.get('disabled')]
        percentage = None
        if self.strategy:
            percentage = parse_percentage(self.strategy.get('parameters', {}).get('rollout'),
                                          "the flexibleRollout strategy of '%s'" % self.name)
        return state(True, bool(parsed.get('enabled')), percentage)

    def validate(self, current, wanted):
        """Refuse a rollout that other strategies would override (Unleash ORs strategies)."""
        if wanted['rollout_percentage'] is not None and not self.strategy and self.other_strategies:
            raise FlagError("feature '%s' has the strategies %s in environment '%s' and no flexibleRollout; a rollout "
                            "percentage added beside them would not limit the flag (Unleash enables it when any strategy "
                            "matches). Replace them with a flexibleRollout strategy, or leave rollout_percentage unset"
                            % (self.name, ', '.join(self.other_strategies), self.environment))

    def predict(self, current, wanted):
        predicted = predict(current, wanted)
        if predicted['rollout_percentage'] is None and wanted['enabled'] and not self.strategy:
            predicted['rollout_percentage'] = 100  # Unleash adds a 100 % flexibleRollout when switching on
        return predicted

    def write(self, wanted, current):
        if not current['exists']:
            self.call('POST', '%s/api/admin/projects/%s/features' % (self.base, quote(self.project, safe='')),
                      payload={'name': self.name, 'type': 'release'}, step="creating feature '%s'" % self.name)
            self.read()
        # Set the rollout before switching on, so the flag never is on at a wrong percentage.
        percentage = wanted['rollout_percentage']
        if percentage is not None and current['rollout_percentage'] != percentage:
            if self.strategy:
                self.call('PATCH', '%s/strategies/%s' % (self.env_url, quote(self.strategy['id'], safe='')),
                          payload=[{'op': 'replace', 'path': '/parameters/rollout', 'value': str(percentage)}],
                          step='changing the rollout of the flexibleRollout strategy')
            else:
                self.call('POST', '%s/strategies' % self.env_url,
                          payload={'name': 'flexibleRollout', 'constraints': [],
                                   'parameters': {'rollout': str(percentage), 'stickiness': self.stickiness,
                                                  'groupId': self.name}},
                          step='adding a flexibleRollout strategy')
        if wanted['enabled'] != bool(current['enabled']) or not current['exists']:
            self.call('POST', '%s/%s' % (self.env_url, 'on' if wanted['enabled'] else 'off'),
                      step="switching '%s' %s in '%s'" % (self.name, 'on' if wanted['enabled'] else 'off', self.environment))
        return self.read()


# -- generic JSON API --------------------------------------------------------------------------

def set_path(document, path, value):
    """Set value at a dotted path (keys only) in document, creating objects on the way."""
    tokens = smoke.parse_path(path)
    if any(isinstance(t, int) for t in tokens):
        raise FlagError("field path '%s' has a list index; write fields are object keys" % path)
    current = document
    for token in tokens[:-1]:
        current = current.setdefault(token, {})
    current[tokens[-1]] = value
    return document


class HttpBackend(object):
    """GET url reads {enabled_field, percentage_field}; write_method (POST) url sends them back."""

    def __init__(self, params, context):
        self.url = params['api_url'].replace('{name}', quote(params['name'], safe=''))
        self.write_url = (params['write_url'] or self.url).replace('{name}', quote(params['name'], safe=''))
        self.write_method = params['write_method'].upper()
        self.headers = http.check_headers(params['headers'], 'headers')
        if params['api_token'] and not any(k.lower() == 'authorization' for k in self.headers):
            self.headers['Authorization'] = http.check_header_value('Authorization', 'Bearer %s' % params['api_token'],
                                                                    'api_token')
        self.enabled_field = params['enabled_field']
        self.percentage_field = params['percentage_field']
        self.extra = params['write_body'] or {}
        self.timeout = params['timeout']
        self.context = context
        self.name = params['name']
        for field in (self.enabled_field, self.percentage_field):
            smoke.parse_path(field)

    def close(self):
        pass

    def read(self):
        response, parsed = http.json_request('GET', self.url, headers=self.headers, timeout=self.timeout,
                                             context=self.context)
        where = http.strip_credentials(self.url)
        if response.status == 404:
            return state(False, None)
        if response.status in (401, 403):
            raise FlagError('GET %s was refused (HTTP %d); check api_token or headers' % (where, response.status))
        if not 200 <= response.status < 300:
            raise FlagError('GET %s failed (HTTP %d): %s' % (where, response.status, response.text[:300]))
        if not isinstance(parsed, dict):
            raise FlagError('GET %s did not return a JSON object: %s' % (where, response.text[:200]))
        enabled = smoke.get_path(parsed, self.enabled_field)
        if enabled is smoke._MISSING:
            raise FlagError("GET %s returned no '%s' field; set enabled_field to where the API puts the flag's state "
                            "(fields: %s)" % (where, self.enabled_field, ', '.join(sorted(parsed))))
        if not isinstance(enabled, bool):
            raise FlagError("GET %s returned %s = %r, not true or false" % (where, self.enabled_field, enabled))
        percentage = smoke.get_path(parsed, self.percentage_field)
        if percentage is smoke._MISSING:
            percentage = None
        percentage = parse_percentage(percentage, "field '%s' of %s" % (self.percentage_field, where))
        return state(True, enabled, percentage)

    def body(self, wanted):
        document = json.loads(json.dumps(self.extra))
        set_path(document, self.enabled_field, wanted['enabled'])
        if wanted['rollout_percentage'] is not None:
            set_path(document, self.percentage_field, wanted['rollout_percentage'])
        return document

    def write(self, wanted, current):
        where = http.strip_credentials(self.write_url)
        response, dummy = http.json_request(self.write_method, self.write_url, headers=self.headers,
                                            payload=self.body(wanted), timeout=self.timeout, context=self.context)
        if not 200 <= response.status < 300:
            raise FlagError('%s %s failed (HTTP %d): %s' % (self.write_method, where, response.status, response.text[:300]))
        after = self.read()
        expected_pct = wanted['rollout_percentage']
        if after['enabled'] != wanted['enabled'] or (expected_pct is not None and after['rollout_percentage'] != expected_pct):
            raise FlagError('%s %s answered HTTP %d, but GET %s still shows enabled=%s rollout_percentage=%s; check '
                            'write_method, write_url and the field names' % (
                                self.write_method, where, response.status, http.strip_credentials(self.url),
                                after['enabled'], after['rollout_percentage']))
        return after
