#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: feature_flag
short_description: Switch a feature flag on or off, or set its rollout, in PostgreSQL, Redis, Unleash or a JSON API
version_added: 0.1.0
description:
  - Reads a feature flag, then sets it to O(state) and, optionally, O(rollout_percentage), only when it differs.
  - Returns the state before and after (RV(previous), RV(current)), so a later task can put back exactly what was there.
  - Replaces the runbooks' C(UPDATE feature_flags SET enabled = false WHERE flag_name = 'auto_sync'),
    C(redis-cli SET maintenance_mode true) / C(redis-cli DEL maintenance_mode), and the C(curl -X POST) calls
    to a flag service stepping a rollout 10 -> 25 -> 50 -> 100.
  - "Backends: V(postgres), a row of a flags table; V(redis), a string key; V(unleash), a feature of the Unleash
    admin API in one project and environment, its rollout a C(flexibleRollout) strategy; V(http), a JSON API
    read with C(GET) and written with a configurable request."
options:
  name:
    description:
      - Name of the flag (the row's O(name_column) value, the default Redis key, the Unleash feature name).
    type: str
    required: true
  state:
    description:
      - V(enabled) switches the flag on, V(disabled) off.
    type: str
    required: true
    choices: [ enabled, disabled ]
  rollout_percentage:
    description:
      - Share of users (0 to 100) the flag is on for. Left as it is when not given.
      - V(postgres) needs O(percentage_column); V(unleash) sets the C(rollout) of the environment's
        C(flexibleRollout) strategy (added when there is none), before switching the flag on; V(http) sends
        O(percentage_field). V(redis) has no percentage.
      - Allowed with O(state=disabled) too, to restore a previous state exactly.
    type: int
  backend:
    description: Where the flag lives.
    type: str
    required: true
    choices: [ postgres, redis, unleash, http ]
  create:
    description:
      - Create the flag when it does not exist (V(postgres) inserts a row, V(unleash) creates a C(release)
        feature in O(project), V(http) sends the write request anyway). Without it a missing flag is an error.
      - V(redis) always creates its key.
    type: bool
    default: false
  table:
    description: V(postgres) - the flags table, V(feature_flags) or V(schema.table).
    type: str
    default: feature_flags
  name_column:
    description: V(postgres) - column holding the flag name.
    type: str
    default: flag_name
  enabled_column:
    description: V(postgres) - boolean column holding the flag's state.
    type: str
    default: enabled
  percentage_column:
    description: V(postgres) - integer column holding the rollout percentage, if the table has one.
    type: str
  redis_url:
    description:
      - V(redis) - C(redis://[:password@]host:port/db) or C(rediss://...).
    type: str
  key:
    description: V(redis) - the key. Defaults to O(name).
    type: str
  enabled_value:
    description: V(redis) - value the key holds when the flag is on.
    type: str
    default: 'true'
  disabled_value:
    description: V(redis) - value the key holds when the flag is off (unless O(delete_when_disabled)).
    type: str
    default: 'false'
  delete_when_disabled:
    description: V(redis) - switch off by deleting the key (C(redis-cli DEL)) instead of writing O(disabled_value).
    type: bool
    default: false
  api_url:
    description:
      - V(unleash) - base URL of Unleash, V(https://unleash.example.com).
      - V(http) - URL of the flag, read with C(GET); C({name}) in it is replaced by O(name),
        V(https://api.example.com/api/v1/feature-flags/{name}).
    type: str
  api_token:
    description:
      - V(unleash) - an admin API token (sent as the C(Authorization) header).
      - 'V(http) - sent as C(Authorization: Bearer <token>) unless O(headers) has an C(Authorization).'
    type: str
  project:
    description: V(unleash) - the project of the feature.
    type: str
    default: default
  environment:
    description: V(unleash) - the environment to switch the flag in (Unleash starts with V(development) and V(production)).
    type: str
  stickiness:
    description: V(unleash) - stickiness of a C(flexibleRollout) strategy the module adds.
    type: str
    default: default
  headers:
    description: V(http) - extra headers for every request.
    type: dict
    default: {}
  write_url:
    description: V(http) - URL of the write request. Defaults to O(api_url).
    type: str
  write_method:
    description: V(http) - method of the write request.
    type: str
    default: POST
  write_body:
    description: V(http) - more fields to send with the write request (O(enabled_field) and O(percentage_field) are added).
    type: dict
  enabled_field:
    description: V(http) - where the flag's state is in the JSON (read and written); dots for nested objects.
    type: str
    default: enabled
  percentage_field:
    description: V(http) - where the rollout percentage is in the JSON; dots for nested objects.
    type: str
    default: rolloutPercentage
  validate_certs:
    description: V(unleash), V(http) - verify TLS certificates.
    type: bool
    default: true
  ca_path:
    description: V(unleash), V(http) - PEM file of the certificate authorities to trust.
    type: path
  timeout:
    description: Seconds to wait for the API or Redis.
    type: float
    default: 10
extends_documentation_fragment:
  - runbook.deploy.postgres
attributes:
  check_mode:
    support: full
    description: Reads the flag and reports what would change, writing nothing.
  diff_mode:
    support: full
    description: Shows the flag's state before and after.
notes:
  - The V(postgres) connection options (O(login_host), O(db_url) and so on) are used only with O(backend=postgres).
    The V(postgres) write locks the row (C(SELECT ... FOR UPDATE)) and commits once.
  - The V(redis) backend needs the C(redis) Python library on the managed host; the others need only
    psycopg2 (V(postgres)) or nothing beyond Python.
  - The V(http) backend reads the flag again after writing and fails if the API did not take the change.
  - Header values (O(headers), O(api_token)) must be one line of Latin-1 text without control characters, and
    header names RFC 9110 tokens; other values fail before any request, naming the option. O(timeout) must be
    more than 0 and at most 604800 seconds (7 days).
seealso:
  - name: Unleash admin API
    description: Feature and strategy endpoints used by the V(unleash) backend.
    link: https://docs.getunleash.io/reference/api/unleash
author:
  - runbook.deploy contributors (@runbook-deploy)
'''

EXAMPLES = r'''
- name: Switch auto_sync off for the migration (feature_flags table)
  runbook.deploy.feature_flag:
    backend: postgres
    db_url: "{{ database_url }}"
    name: auto_sync
    state: disabled
  register: auto_sync

- name: Put auto_sync back the way it was
  runbook.deploy.feature_flag:
    backend: postgres
    db_url: "{{ database_url }}"
    name: auto_sync
    state: "{{ 'enabled' if auto_sync.previous.enabled else 'disabled' }}"

- name: Maintenance mode on (redis-cli SET maintenance_mode true)
  runbook.deploy.feature_flag:
    backend: redis
    redis_url: "{{ vault_redis_url }}"
    name: maintenance_mode
    state: enabled
    delete_when_disabled: true

- name: Roll dashboard-v2 out to 25 % of production users in Unleash
  runbook.deploy.feature_flag:
    backend: unleash
    api_url: https://unleash.example.com
    api_token: "{{ vault_unleash_admin_token }}"
    project: default
    environment: production
    name: dashboard-v2
    state: enabled
    rollout_percentage: 25

- name: The same through the application's own flag API
  runbook.deploy.feature_flag:
    backend: http
    api_url: https://api.example.com/api/v1/feature-flags/{name}
    api_token: "{{ vault_admin_token }}"
    name: dashboard-v2
    state: enabled
    rollout_percentage: 25
'''

RETURN = r'''
previous:
  description: The flag before the task.
  returned: success
  type: dict
  contains:
    exists:
      description: Whether the flag (row, key, feature) existed.
      type: bool
      sample: true
    enabled:
      description: Whether it was on; null when it did not exist or held a value that is neither on nor off.
      type: bool
      sample: true
    rollout_percentage:
      description: Its rollout percentage, or null when the backend or the flag has none.
      type: int
      sample: 10
    value:
      description: V(redis) only - the key's raw value, null when the key did not exist.
      type: str
      sample: 'true'
current:
  description: The flag after the task (in check mode, what it would be). Same keys as RV(previous).
  returned: success
  type: dict
  sample: {"exists": true, "enabled": true, "rollout_percentage": 25}
name:
  description: The flag's name.
  returned: always
  type: str
  sample: dashboard-v2
backend:
  description: The backend used.
  returned: always
  type: str
  sample: unleash
'''

import re
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.runbook.deploy.plugins.module_utils import feature_flags as flags
from ansible_collections.runbook.deploy.plugins.module_utils import http_client as http
from ansible_collections.runbook.deploy.plugins.module_utils import postgres as pg
from ansible_collections.runbook.deploy.plugins.module_utils import smoke

BACKEND_OPTIONS = {
    'postgres': ('table', 'name_column', 'enabled_column', 'percentage_column', 'login_host', 'login_port', 'login_user',
                 'login_password', 'login_unix_socket', 'db', 'db_url', 'ssl_mode', 'ca_cert'),
    'redis': ('redis_url', 'key', 'enabled_value', 'disabled_value', 'delete_when_disabled'),
    'unleash': ('project', 'environment', 'stickiness'),
    'http': ('headers', 'write_url', 'write_method', 'write_body', 'enabled_field', 'percentage_field'),
}


def misplaced_options(params, argument_spec):
    """Options set (away from their default) that the chosen backend does not use."""
    backend = params['backend']
    wrong = []
    for owner, names in BACKEND_OPTIONS.items():
        if owner == backend:
            continue
        for name in names:
            if params.get(name) not in (None, argument_spec[name].get('default')):
                wrong.append('%s (%s)' % (name, owner))
    if backend not in ('unleash', 'http'):
        for name in ('api_url', 'api_token'):
            if params.get(name):
                wrong.append('%s (unleash, http)' % name)
    return wrong


def safe_params(params, redact):
    """Module args for the result's invocation: secret header values and no_log options hidden."""
    safe = dict(params, headers=http.redact_headers(params['headers']))
    for name in ('api_token', 'redis_url', 'login_password', 'db_url'):
        if safe.get(name):
            safe[name] = 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'
    return redact(safe)


def open_backend(module):
    p = module.params
    backend = p['backend']
    if backend == 'postgres':
        if not pg.HAS_PSYCOPG2:
            module.fail_json(msg=missing_required_lib('psycopg2'))
        return flags.PostgresBackend(p)
    if backend == 'redis':
        if not flags.HAS_REDIS:
            module.fail_json(msg=missing_required_lib('redis'))
        return flags.RedisBackend(p)
    if not p['api_url'].lower().startswith(('http://', 'https://')):
        raise flags.FlagError("api_url '%s' must start with http:// or https://" % http.strip_credentials(p['api_url']))
    context = http.ssl_context(p['validate_certs'], p['ca_path']) if p['api_url'].lower().startswith('https') else None
    if p['ca_path'] and context is None:
        http.ssl_context(True, p['ca_path'])
    if backend == 'unleash':
        return flags.UnleashBackend(p, context)
    return flags.HttpBackend(p, context)


def main():
    argument_spec = pg.postgres_common_argument_spec()
    argument_spec.update(
        name=dict(type='str', required=True),
        state=dict(type='str', required=True, choices=['enabled', 'disabled']),
        rollout_percentage=dict(type='int'),
        backend=dict(type='str', required=True, choices=['postgres', 'redis', 'unleash', 'http']),
        create=dict(type='bool', default=False),
        table=dict(type='str', default='feature_flags'),
        name_column=dict(type='str', default='flag_name'),
        enabled_column=dict(type='str', default='enabled'),
        percentage_column=dict(type='str'),
        redis_url=dict(type='str', no_log=True),
        key=dict(type='str', no_log=False),
        enabled_value=dict(type='str', default='true'),
        disabled_value=dict(type='str', default='false'),
        delete_when_disabled=dict(type='bool', default=False),
        api_url=dict(type='str'),
        api_token=dict(type='str', no_log=True),
        project=dict(type='str', default='default'),
        environment=dict(type='str'),
        stickiness=dict(type='str', default='default'),
        headers=dict(type='dict', default={}),
        write_url=dict(type='str'),
        write_method=dict(type='str', default='POST'),
        write_body=dict(type='dict'),
        enabled_field=dict(type='str', default='enabled'),
        percentage_field=dict(type='str', default='rolloutPercentage'),
        validate_certs=dict(type='bool', default=True),
        ca_path=dict(type='path'),
        timeout=dict(type='float', default=10),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[('backend', 'redis', ['redis_url']), ('backend', 'unleash', ['api_url', 'api_token', 'environment']),
                     ('backend', 'http', ['api_url'])],
    )
    p = module.params
    result = dict(changed=False, name=p['name'], backend=p['backend'])
    # AnsibleModule would echo the headers option as given (an Authorization header, an API key).
    redact = http.Redactor()
    redact.add_headers(p['headers'])
    result['invocation'] = dict(module_args=safe_params(p, redact))
    backend = None
    try:
        wrong = misplaced_options(p, argument_spec)
        if wrong:
            raise flags.FlagError('backend=%s does not use %s; remove them or choose the backend they belong to'
                                  % (p['backend'], ', '.join(wrong)))
        percentage = p['rollout_percentage']
        if percentage is not None:
            if not 0 <= percentage <= 100:
                raise flags.FlagError('rollout_percentage must be between 0 and 100, not %d' % percentage)
            if p['backend'] == 'redis':
                raise flags.FlagError('rollout_percentage is not supported by backend=redis (a key is on or off)')
            if p['backend'] == 'postgres' and not p['percentage_column']:
                raise flags.FlagError('rollout_percentage needs percentage_column, the column of %s that holds it'
                                      % p['table'])
        # NaN and infinity pass a plain comparison, then overflow socket timeouts (1e308: OverflowError)
        http.check_seconds(p['timeout'], 'timeout', allow_minimum=False)
        if p['backend'] == 'http' and not re.match(r'^[A-Za-z]+$', p['write_method'] or ''):
            raise flags.FlagError("write_method '%s' is not an HTTP method (letters only, e.g. POST, PUT, PATCH)"
                                  % p['write_method'])
        if p['backend'] == 'unleash' and p['api_token']:
            http.check_header_value('Authorization', p['api_token'], 'api_token')
        if p['backend'] == 'redis' and p['enabled_value'] == p['disabled_value']:
            raise flags.FlagError("enabled_value and disabled_value are both '%s'; they must differ" % p['enabled_value'])
        wanted = flags.state(True, p['state'] == 'enabled', percentage)
        backend = open_backend(module)
        current = backend.read()
        if not current['exists'] and not p['create'] and p['backend'] != 'redis':
            where = {'postgres': lambda: "no row of %s has %s = '%s'" % (backend.describe(), p['name_column'], p['name']),
                     'unleash': lambda: "Unleash has no feature '%s' in project '%s'" % (p['name'], p['project']),
                     'http': lambda: 'GET %s answered 404' % http.strip_credentials(backend.url)}[p['backend']]()
            raise flags.FlagError("feature flag '%s' does not exist: %s; set create=true to create it"
                                  % (p['name'], where))
        if hasattr(backend, 'validate'):
            backend.validate(current, wanted)
        satisfied = getattr(backend, 'satisfied', flags.satisfied)
        predict = getattr(backend, 'predict', flags.predict)
        result['previous'] = current
        if satisfied(current, wanted):
            result['current'] = current
        else:
            result['changed'] = True
            result['current'] = predict(current, wanted) if module.check_mode else backend.write(wanted, current)
        if module._diff:
            result['diff'] = dict(before=current, after=result['current'],
                                  before_header='%s %s' % (p['backend'], p['name']),
                                  after_header='%s %s' % (p['backend'], p['name']))
    except (flags.FlagError, pg.PostgresError, http.HttpError, smoke.ExpectationError) as exc:
        module.fail_json(msg=redact(to_native(exc)), **result)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg=redact('feature_flag failed unexpectedly: %s' % to_native(exc)),
                         exception=redact(traceback.format_exc()), **result)
    finally:
        if backend is not None:
            backend.close()
    module.exit_json(**result)


if __name__ == '__main__':
    main()
