# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
  name: pg_url
  short_description: Build a PostgreSQL connection URL (C(DATABASE_URL)) from its parts, every part encoded
  description:
    - Builds C(postgresql://user:password@host:port/dbname?options) from a dictionary of parts, with the user, the
      password and the database name percent-encoded as RFC 3986 requires, so a password holding C(/), C(@), C(:),
      C(#), C(?) or C(%) reaches Prisma, node-postgres or libpq intact.
    - The C(urlencode) filter is not enough for a password, it leaves C(/) as it is. Prisma then reads part of the
      password as the path and cannot connect; the deployment sees only a smoke test that times out.
    - The parts may be named as in this collection's roles and in community.postgresql (C(login_host),
      C(login_port), C(login_user), C(login_password), C(login_db)), or plainly (C(host), C(port), C(user),
      C(password), C(dbname)). An unknown name is an error that suggests the closest known one.
    - The result holds the password. Use it only where the value is a secret, for example in C(backend_env) of
      the runbook.deploy.backend role, whose tasks are C(no_log). Error messages name parts, never their values.
  positional: _input
  options:
    _input:
      description:
        - The parts. C(host) (or C(login_host)) and C(dbname) (or C(login_db), C(db), C(database)) are required.
        - An C(options) key holds query options, as O(options) does (O(options) is applied after it).
        - A C(postgresql://) URL is accepted too (such as C(runbook_database) given as a URL) and is rebuilt with
          every part encoded.
        - An empty string (or null) gives an empty string, so that C(runbook_database | default('')) can be the
          default of a role's URL.
        - C(host) may be a name, an IPv4 or IPv6 address (bracketed in the URL), or a Unix socket directory
          (a path starting with C(/)), which goes into the C(host) query option as libpq reads it.
        - C(port) is a number from 1 to 65535. C(password) needs C(user).
      type: raw
      required: true
    scheme:
      description: The URL scheme. Both are accepted by Prisma, node-postgres and libpq.
      type: str
      default: postgresql
      choices: [postgresql, postgres]
    options:
      description:
        - Query options appended in the order given, each key and value percent-encoded, for example
          C(sslmode=require), C(schema=app) (Prisma), C(connection_limit=5) (Prisma), C(application_name).
        - A boolean becomes C(true) or C(false).
      type: dict
      default: {}
"""

EXAMPLES = r"""
# In the inventory: the backend's DATABASE_URL from the same parts the roles use, the password from the vault.
backend_env:
  DATABASE_URL: >-
    {{ {'login_host': 'db.internal', 'login_port': 5432, 'login_user': 'pfa_app',
        'login_password': vault_app_db_password, 'login_db': 'pfa_vanguard'}
       | runbook.deploy.pg_url(options={'sslmode': 'require', 'schema': 'public'}) }}

# A password of 'p/ss@word#1' becomes p%2Fss%40word%231:
#   postgresql://pfa_app:p%2Fss%40word%231@db.internal:5432/pfa_vanguard?sslmode=require&schema=public
"""

RETURN = r"""
  _value:
    description: The URL. It holds the password.
    type: str
"""

import difflib
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

from ansible.errors import AnsibleFilterError

# Each part and the names it may be given under, the first one being the plain name.
PART_NAMES = {
    'host': ('host', 'login_host'),
    'port': ('port', 'login_port'),
    'user': ('user', 'login_user', 'username'),
    'password': ('password', 'login_password'),
    'dbname': ('dbname', 'login_db', 'db', 'database'),
}
NAME_TO_PART = dict((name, part) for part, names in PART_NAMES.items() for name in names)


def _text(value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def _parts(value, required=('host', 'dbname'), filter_name='pg_url'):
    if isinstance(value, str):
        value = _parse_url(value, filter_name)
    if not isinstance(value, Mapping):
        raise AnsibleFilterError('%s expects a dictionary of connection parts (host, port, user, password, '
                                 'dbname) or a postgresql:// URL, not a %s' % (filter_name, type(value).__name__))
    parts = {}
    problems = []
    for name in value:
        if name == 'options':
            continue
        part = NAME_TO_PART.get(name)
        if part is None:
            close = difflib.get_close_matches(str(name), list(NAME_TO_PART), n=1)
            problems.append('unknown part %r%s' % (name, ' (did you mean %r?)' % close[0] if close else ''))
            continue
        if value[name] is None or value[name] == '':
            continue
        if part in parts:
            problems.append('%s is given twice (%s)' % (part, ' and '.join(n for n in PART_NAMES[part] if n in value)))
            continue
        parts[part] = value[name]
    for part in required:
        if part not in parts:
            problems.append('%s is missing (as %s)' % (part, ' or '.join(PART_NAMES[part])))
    if 'password' in parts and 'user' not in parts:
        problems.append('a password needs a user (as %s)' % ' or '.join(PART_NAMES['user']))
    if 'port' in parts:
        port = parts['port']
        try:
            number = int(str(port), 10)
        except ValueError:
            number = 0
        if isinstance(port, bool) or not 1 <= number <= 65535:
            problems.append('port must be a number from 1 to 65535')
        else:
            parts['port'] = number
    if problems:
        raise AnsibleFilterError('%s: %s. The parts are: %s (and options).' % (
            filter_name, '; '.join(problems), ', '.join('/'.join(names) for names in PART_NAMES.values())))
    if value.get('options'):
        if not isinstance(value['options'], Mapping):
            raise AnsibleFilterError('%s: options must be a dictionary of query options' % filter_name)
        parts['options'] = dict(value['options'])
    return parts


def _parse_url(url, filter_name):
    """The parts of a postgresql:// URL, percent-decoded as libpq decodes them ('+' stays a plus); host, port, user,
    password and dbname may also be given as query options (libpq reads them there too). The error never quotes the
    URL (it holds a password)."""
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError as error:
        raise AnsibleFilterError('%s: the connection URL cannot be parsed (%s)' % (filter_name, error.__class__.__name__))
    if split.scheme not in ('postgresql', 'postgres'):
        raise AnsibleFilterError('%s: a connection URL starts with postgresql:// or postgres://' % filter_name)
    query = {}
    for item in split.query.split('&'):
        if item:
            key, dummy, value = item.partition('=')
            query[unquote(key)] = unquote(value)
    parts = {}
    for part, item in (('host', split.hostname), ('port', port), ('user', split.username),
                       ('password', split.password), ('dbname', split.path.lstrip('/'))):
        if item not in (None, ''):
            parts[part] = unquote(item) if isinstance(item, str) else item
    for part in ('host', 'port', 'user', 'password', 'dbname'):
        if query.get(part, '') != '':
            parts[part] = query.pop(part)
        query.pop(part, None)
    if query:
        parts['options'] = query
    return parts


def pg_url(value, scheme='postgresql', options=None):
    """The connection URL of the parts in value, each percent-encoded."""
    if scheme not in ('postgresql', 'postgres'):
        raise AnsibleFilterError("pg_url: scheme must be postgresql or postgres, not %r" % (scheme,))
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise AnsibleFilterError('pg_url: options must be a dictionary of query options, not a %s'
                                 % type(options).__name__)
    if value is None or value == '':
        # No connection given (runbook_database | default('')): no URL, so that a role's default stays empty.
        return ''
    parts = _parts(value)
    options = dict(parts.pop('options', {}), **options)
    query = []
    host = _text(parts['host'])
    if host.startswith('/'):
        # A Unix socket directory: libpq takes it from the query (postgresql:///db?host=/run/postgresql).
        query.append(('host', host))
        host = ''
    elif ':' in host and not host.startswith('['):
        host = '[%s]' % host
    netloc = host
    if 'port' in parts:
        netloc += ':%d' % parts['port']
    if 'user' in parts:
        userinfo = quote(_text(parts['user']), safe='')
        if 'password' in parts:
            userinfo += ':' + quote(_text(parts['password']), safe='')
        netloc = userinfo + '@' + netloc
    query.extend((str(key), _text(item)) for key, item in options.items())
    url = '%s://%s/%s' % (scheme, netloc, quote(_text(parts['dbname']), safe=''))
    if query:
        url += '?' + '&'.join('%s=%s' % (quote(key, safe=''), quote(item, safe='')) for key, item in query)
    return url


def pg_parts(value):
    """The connection parts of a dictionary (any of the accepted names) or a postgresql:// URL, under their plain
    names (host, port, user, password, dbname, options); none is required."""
    if value is None or value == '':
        return {}
    return _parts(value, required=(), filter_name='pg_parts')


class FilterModule(object):
    def filters(self):
        return {'pg_url': pg_url, 'pg_parts': pg_parts}
