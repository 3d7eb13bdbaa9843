# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    # Connection options shared by the runbook.deploy modules that talk to PostgreSQL.
    # Keep in sync with plugins/module_utils/postgres.py postgres_common_argument_spec().
    DOCUMENTATION = r'''
options:
  login_host:
    description:
      - Host running the database.
      - Overrides the host in O(db_url).
      - If neither is given, libpq's default (the local socket) is used.
    type: str
    aliases: [ host ]
  login_port:
    description:
      - Database port to connect to. Overrides the port in O(db_url).
      - Defaults to V(5432) when neither gives one.
    type: int
    aliases: [ port ]
  login_user:
    description:
      - The user to connect as. Overrides the user in O(db_url).
      - Defaults to V(postgres) when neither gives one.
    type: str
    aliases: [ login, user ]
  login_password:
    description:
      - The password to connect with. Overrides the password in O(db_url).
      - It never reaches a command line; each module's notes say how it travels to the tools it runs.
    type: str
  login_unix_socket:
    description:
      - Directory of the server's Unix domain socket, for local connections. Takes precedence over O(login_host).
    type: str
    aliases: [ unix_socket ]
  db:
    description:
      - Name of the database. Overrides the database in O(db_url).
      - Always taken as a name, never as a libpq connection string (a database called C(host=x dbname=y) is that
        database, on the server the connection options name).
    type: str
    aliases: [ login_db, database ]
  db_url:
    description:
      - A libpq connection URL, C(postgres://user:password@host:port/dbname?sslmode=require), as runbooks
        and applications carry it (C(DATABASE_URL)).
      - Options given explicitly (O(login_host), O(login_user), O(db) and so on) override its parts.
      - Supported query parameters are C(sslmode), C(sslrootcert), C(host), C(port), C(connect_timeout),
        C(application_name), C(user), C(password) and C(dbname).
    type: str
    aliases: [ database_url ]
  ssl_mode:
    description:
      - Whether or with what priority a secure SSL TCP/IP connection is negotiated with the server.
      - See U(https://www.postgresql.org/docs/current/libpq-ssl.html) for the modes. libpq's default is V(prefer).
    type: str
    choices: [ allow, disable, prefer, require, verify-ca, verify-full ]
  ca_cert:
    description:
      - A file of SSL certificate authority certificates the server's certificate must be signed by.
    type: path
    aliases: [ ssl_rootcert ]
  connect_timeout:
    description:
      - Seconds to wait for a connection to the server.
    type: int
    default: 10
requirements:
  - psycopg2 >= 2.8 on the managed host
'''
