"""runbook.deploy.pg_url: a DATABASE_URL from parts, read back by libpq's own parser (psycopg2's parse_dsn)."""

from __future__ import annotations

import psycopg2
import pytest
from psycopg2.extensions import parse_dsn

from ansible.errors import AnsibleFilterError
from ansible.template import Templar, trust_as_template

from ansible_collections.runbook.deploy.plugins.filter.pg_url import pg_parts, pg_url

# Every character that means something in a URL, and some that are not ASCII.
NASTY = 'p/ss@w:rd#?%&=+ é;\'"'


def test_every_part_survives_libpq_parsing():
    url = pg_url({'login_host': 'db.internal', 'login_port': '5433', 'login_user': 'app@team',
                  'login_password': NASTY, 'login_db': 'pfa/vanguard'},
                 options={'sslmode': 'require', 'application_name': 'api & worker'})
    assert url.startswith('postgresql://app%40team:p%2Fss%40w%3Ard%23%3F%25%26%3D%2B%20')
    assert parse_dsn(url) == {'host': 'db.internal', 'port': '5433', 'user': 'app@team', 'password': NASTY,
                              'dbname': 'pfa/vanguard', 'sslmode': 'require', 'application_name': 'api & worker'}


def test_the_urlencode_recipe_it_replaces_loses_the_password():
    """The recipe the profiles used, `password | urlencode`, leaves '/' as it is: libpq then reads a different
    password (or none), and Prisma cannot connect. pg_url's URL reads back whole."""
    templar = Templar(loader=None, variables={'password': 'ab/cd@ef'})
    recipe = templar.template(trust_as_template("postgresql://app:{{ password | urlencode }}@db:5432/app"))
    assert recipe.startswith('postgresql://app:ab/cd'), recipe
    try:
        read_back = parse_dsn(recipe).get('password')
    except psycopg2.ProgrammingError:  # libpq refuses the URL outright: as broken for the app
        read_back = None
    assert read_back != 'ab/cd@ef', recipe
    assert parse_dsn(pg_url({'host': 'db', 'user': 'app', 'password': 'ab/cd@ef', 'dbname': 'app'}))['password'] == \
        'ab/cd@ef'


def test_plain_names_ipv6_socket_directory_and_options():
    assert pg_url({'host': '::1', 'port': 5432, 'dbname': 'app'}) == 'postgresql://[::1]:5432/app'
    assert parse_dsn(pg_url({'host': '::1', 'dbname': 'app'}))['host'] == '::1'
    socket = pg_url({'host': '/run/postgresql', 'user': 'app', 'dbname': 'app'}, scheme='postgres',
                    options={'schema': 'public', 'pgbouncer': True})
    assert socket == 'postgres://app@/app?host=%2Frun%2Fpostgresql&schema=public&pgbouncer=true'
    assert parse_dsn(pg_url({'host': '/run/postgresql', 'dbname': 'app'}))['host'] == '/run/postgresql'
    # Empty or null parts are left out, as when an inventory leaves the port to the default.
    assert pg_url({'host': 'db', 'port': '', 'user': 'app', 'password': None, 'dbname': 'app'}) == \
        'postgresql://app@db/app'


@pytest.mark.parametrize('parts,kwargs,fragments', [
    ({'host': 'db', 'dbname': 'app', 'pasword': 'x'}, {}, ["unknown part 'pasword' (did you mean 'password'?)"]),
    ({'login_host': 'db', 'login_db': 'app', 'login_pasword': 'x'}, {},
     ["'login_pasword' (did you mean 'login_password'?)"]),
    ({'host': 'db'}, {}, ['dbname is missing (as dbname or login_db or db or database)']),
    ({'dbname': 'app', 'user': 'u'}, {}, ['host is missing']),
    ({'host': 'db', 'login_host': 'db2', 'dbname': 'app'}, {}, ['host is given twice (host and login_host)']),
    ({'host': 'db', 'dbname': 'app', 'password': NASTY}, {}, ['a password needs a user']),
    ({'host': 'db', 'dbname': 'app', 'user': 'u', 'password': NASTY, 'login_password': NASTY}, {},
     ['password is given twice (password and login_password)']),
    ({'host': 'db', 'dbname': 'app', 'port': '54x'}, {}, ['port must be a number from 1 to 65535']),
    ({'host': 'db', 'dbname': 'app', 'port': 70000}, {}, ['port must be a number from 1 to 65535']),
    ({'host': 'db', 'dbname': 'app'}, {'scheme': 'mysql'}, ['scheme must be postgresql or postgres']),
    ({'host': 'db', 'dbname': 'app'}, {'options': 'sslmode=require'}, ['options must be a dictionary']),
    (['db', 'app'], {}, ['expects a dictionary of connection parts (host, port, user, password, dbname) or a '
                         'postgresql:// URL, not a list']),
    ('postgresql://u:' + NASTY.replace('/', '%2F').replace('#', '%23').replace('?', '%3F') + '@db', {},
     ['dbname is missing']),
])
def test_bad_parts_are_named_all_at_once_and_no_value_is_shown(parts, kwargs, fragments):
    with pytest.raises(AnsibleFilterError) as raised:
        pg_url(parts, **kwargs)
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, message
    # The parts are named, never their values: a password must not reach a log through an error.
    assert NASTY not in message and 'p/ss' not in message, message


def test_several_problems_in_one_message():
    with pytest.raises(AnsibleFilterError) as raised:
        pg_url({'hots': 'db', 'user': 'u', 'port': 0})
    message = str(raised.value)
    for fragment in ("unknown part 'hots' (did you mean 'host'?)", 'host is missing', 'dbname is missing',
                     'port must be a number'):
        assert fragment in message, message


def test_a_url_is_read_back_into_parts_and_rebuilt_whole():
    """runbook_database may be a whole DATABASE_URL (from a vault): pg_parts decodes it, pg_url rebuilds it."""
    given = pg_url({'host': 'db.internal', 'port': 6543, 'user': 'app@team', 'password': NASTY, 'dbname': 'pfa'},
                   options={'sslmode': 'require'})
    assert pg_parts(given) == {'host': 'db.internal', 'port': 6543, 'user': 'app@team', 'password': NASTY,
                               'dbname': 'pfa', 'options': {'sslmode': 'require'}}
    assert parse_dsn(pg_url(given)) == parse_dsn(given)
    # The application's own user on the same database, as the inventories build its DATABASE_URL.
    app = dict(pg_parts(given), user='pfa_app', password='x/y')
    assert parse_dsn(pg_url(app)) == {'host': 'db.internal', 'port': '6543', 'user': 'pfa_app', 'password': 'x/y',
                                      'dbname': 'pfa', 'sslmode': 'require'}


def test_a_socket_directory_url_and_the_options_key():
    parts = pg_parts('postgres:///cases?host=/var/run/postgresql&application_name=deploy')
    assert parts == {'host': '/var/run/postgresql', 'dbname': 'cases', 'options': {'application_name': 'deploy'}}
    assert parse_dsn(pg_url(parts, options={'sslmode': 'disable'})) == {
        'host': '/var/run/postgresql', 'dbname': 'cases', 'application_name': 'deploy', 'sslmode': 'disable'}


def test_a_url_is_read_as_libpq_reads_it():
    """'+' stays a plus (libpq does not read it as a space); host, port, user and dbname may be query options; a
    percent-encoded socket directory in the host part is decoded."""
    assert pg_parts('postgresql:///app?host=/run/postgresql&user=app&sslrootcert=/etc/my+ca.pem') == {
        'host': '/run/postgresql', 'user': 'app', 'dbname': 'app', 'options': {'sslrootcert': '/etc/my+ca.pem'}}
    assert pg_parts('postgresql://%2Fvar%2Frun%2Fpostgresql/app')['host'] == '/var/run/postgresql'


def test_no_connection_gives_no_url_and_no_parts():
    """The roles' defaults read `runbook_database | default('')`: unset, every role keeps its own default."""
    assert pg_url('') == '' and pg_url(None) == ''
    assert pg_parts('') == {} and pg_parts(None) == {}
    assert pg_parts({'login_host': 'db', 'login_db': 'x'}) == {'host': 'db', 'dbname': 'x'}


@pytest.mark.parametrize('url, fragment', [
    ('mysql://u:secretpw@db/x', 'starts with postgresql://'),
    ('postgresql://u:secretpw@db:notaport/x', 'cannot be parsed'),
])
def test_a_bad_url_is_named_without_its_password(url, fragment):
    with pytest.raises(AnsibleFilterError) as error:
        pg_parts(url)
    assert fragment in str(error.value) and 'secretpw' not in str(error.value)


def test_roles_default_to_runbook_database_and_keep_their_own_overrides():
    """The defaults as the roles write them, templated by Ansible with a URL and with parts."""
    from ansible_collections.runbook.deploy.plugins.filter.pg_url import FilterModule
    import yaml
    from pathlib import Path
    roles = Path(__file__).resolve().parents[4] / 'roles'
    defaults = {}
    for role in ('backup', 'flags', 'migrate', 'preflight'):
        defaults.update(yaml.safe_load((roles / role / 'defaults' / 'main.yml').read_text()))

    def render(**inventory):
        variables = dict(defaults, **inventory)
        templar = Templar(loader=None, variables=variables)
        templar.environment.filters.update({'runbook.deploy.' + k: v for k, v in FilterModule().filters().items()})
        names = ('backup_db_url', 'flags_db_url', 'migrate_db_login_host', 'migrate_db_login_port',
                 'migrate_db_login_password', 'migrate_db_db', 'migrate_db_schema', 'preflight_db_login_host',
                 'preflight_db_ssl_mode')
        return {name: templar.template(trust_as_template(variables[name])) for name in names}

    url = 'postgresql://owner:p%2Fw@db.internal:6543/cases?sslmode=require'
    rendered = render(runbook_database=url)
    assert parse_dsn(rendered['backup_db_url']) == parse_dsn(url) == parse_dsn(rendered['flags_db_url'])
    assert (rendered['migrate_db_login_host'], int(rendered['migrate_db_login_port']), rendered['migrate_db_db'],
            rendered['migrate_db_login_password']) == ('db.internal', 6543, 'cases', 'p/w')
    assert (rendered['preflight_db_login_host'], rendered['preflight_db_ssl_mode'].strip()) == ('db.internal', 'require')
    assert rendered['migrate_db_schema'].strip() == 'public'
    # A Prisma DATABASE_URL names the schema the app's tables are in: the migrations go there too.
    assert render(runbook_database=url + '&schema=cases')['migrate_db_schema'].strip() == 'cases'

    rendered = render(runbook_database={'host': 'db', 'user': 'o', 'dbname': 'c'}, migrate_db_db='other')
    assert rendered['migrate_db_db'] == 'other', 'a role variable overrides the shared connection'
    assert int(rendered['migrate_db_login_port']) == 5432

    rendered = render()
    assert rendered['backup_db_url'] == '' and rendered['preflight_db_login_host'] == '', \
        'without runbook_database nothing is connected to (the pre-flight database check stays off)'
    assert (rendered['migrate_db_login_host'], rendered['preflight_db_ssl_mode'].strip()) == ('localhost', 'prefer')
