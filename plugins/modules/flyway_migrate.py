#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: flyway_migrate
short_description: Run Flyway database migrations and report what was pending, applied and failed
version_added: 0.1.0
extends_documentation_fragment:
  - runbook.deploy.postgres
description:
  - Drives the Flyway command line (Flyway 9, 10 or 11) with C(-outputType=json) and reads its JSON output;
    O(command=info) lists migrations, O(command=migrate) applies pending ones (up to O(target)),
    O(command=validate) checks applied migrations against the files, O(command=repair) fixes the schema
    history, O(command=baseline) starts managing an existing database, O(command=undo) undoes the last
    migration (paid Flyway editions only).
  - Adds the down path Flyway Community does not have. O(state=rolled_back) runs the project's own down scripts
    (runbook 002's C(rollback_scripts/rollback_V3_013.sql)) under Flyway's migration lock, one transaction per
    migration, and fixes the schema history; the same path M(runbook.deploy.prisma_migrate) takes for Prisma.
  - Returns the schema version before and after, the migrations applied, still pending and failed, and
    Flyway's warnings. A failed migration fails the task with the script name, line and database error, and
    the result still lists what Flyway left behind.
  - The database password (O(login_password), or the one inside O(db_url)) reaches Flyway through
    the C(FLYWAY_PASSWORD) environment variable, never its command line.
  - The connection options are those of M(runbook.deploy.prisma_migrate) and M(runbook.deploy.pg_backup).
options:
  state:
    description:
      - What the database should look like, with the same names as M(runbook.deploy.prisma_migrate).
      - V(deployed) applies pending migrations (C(flyway migrate)); V(status) only reads (C(flyway info)).
      - V(rolled_back) runs the project's own down scripts for the newest applied migrations (everything above
        O(target), the newest O(steps), or O(migration) and every one applied after it), newest first, and takes
        them out of C(flyway_schema_history), as M(runbook.deploy.prisma_migrate) does for Prisma; see the notes.
        It runs no Flyway command, so Flyway need not be installed for it.
      - Mutually exclusive with O(command). Without either, V(deployed).
    type: str
    choices: [ status, deployed, rolled_back ]
  command:
    description:
      - The Flyway command to run, for the commands O(state) does not name.
      - V(info) and V(validate) only read. O(command=validate) fails the task when validation fails (Flyway
        itself exits 0 then), including when migrations are pending, as Flyway's validate does.
      - V(migrate) (the same as O(state=deployed)) reports a change only when it applied at least one migration.
      - V(repair) removes failed rows from the schema history, aligns checksums and descriptions of applied
        migrations with the files, and marks applied migrations missing from the files as deleted.
      - V(baseline) records O(baseline_version) as the version of an existing, unmanaged schema.
      - V(undo) needs Flyway Teams/Enterprise (the Redgate edition); with the Community edition the task
        fails with a message saying so. O(state=rolled_back) works with every edition.
    type: str
    choices: [ info, migrate, validate, repair, baseline, undo ]
  executable:
    description:
      - The Flyway command line, a name looked up in C(PATH) or a path (relative paths are taken from O(working_dir)).
    type: str
    default: flyway
  working_dir:
    description:
      - Directory Flyway runs in; relative O(locations), O(config_files) and O(executable) are resolved from it.
      - Defaults to the directory the module runs in.
    type: path
  config_files:
    description:
      - Flyway configuration files (C(-configFiles)), for example the runbooks' C(flyway-prod.conf).
      - Options given to this module override what the files set.
    type: list
    elements: path
    default: []
  locations:
    description:
      - Where the migrations are. A plain path or C(filesystem:PATH) is a local directory and must exist
        (Flyway only warns about a missing one, then finds nothing to do); other prefixes such as
        C(classpath:) are passed on as they are.
      - Without it, Flyway's own default (or the configuration files) applies.
    type: list
    elements: str
    default: []
  allow_empty:
    description:
      - Accept O(locations) that are missing or hold no migration; Flyway then runs and finds nothing to do.
      - Without it the task fails, naming O(locations) and the folders, when every location is a local folder and
        none holds a file named like a Flyway SQL migration (C(V<version>__<description>.sql),
        C(R__<description>.sql), also in subfolders; with O(config_files) or C(-sqlMigration*) flags in
        O(extra_args), any file), because that is nearly always a wrong path. Set it for a brand-new project
        that has no migrations yet.
    type: bool
    default: false
  db_url:
    description:
      - The database, as a JDBC URL (V(jdbc:postgresql://db.internal:5432/app)) or as a C(postgres://) URL the
        way C(DATABASE_URL) carries it. A user and password in it (C(postgres://user:password@...) or the JDBC
        C(?user=...&password=...)) are used unless O(login_user) and O(login_password) are given, and
        O(login_host), O(login_port), O(db), O(ssl_mode) and O(ca_cert) override its parts.
      - Passed to Flyway in C(FLYWAY_URL), never on the command line. Required unless the connection options or
        O(config_files) (C(flyway.url)) give the database.
    type: str
    aliases: [ database_url, url ]
  login_password:
    description:
      - The password to connect with. Overrides the password in O(db_url).
      - Passed to Flyway in C(FLYWAY_PASSWORD); never on the command line nor in results.
    type: str
    aliases: [ password ]
  login_unix_socket:
    description:
      - Flyway reaches PostgreSQL through JDBC, over TCP only; setting this fails the task. Use O(login_host).
    type: str
    aliases: [ unix_socket ]
  schemas:
    description:
      - Schemas Flyway manages (C(-schemas)); the first one holds C(flyway_schema_history).
      - Mutually exclusive with O(db_schema).
    type: list
    elements: str
    default: []
  db_schema:
    description:
      - The one schema holding the migrated tables and C(flyway_schema_history), with the name
        M(runbook.deploy.prisma_migrate) gives it; the same as O(schemas=[db_schema]).
      - With O(state=rolled_back) and neither option, C(flyway.schemas) of O(config_files), else V(public).
    type: str
  target:
    description:
      - Migrate (and report) only up to this version, as in the runbooks' "migrate to V009". A leading C(V)
        is dropped and underscores become dots (V(V009) is version 9, V(V3_008) is 3.008); V(latest),
        V(current) and V(next) are Flyway's own. Flyway fails when no migration has that version (add C(?)
        to allow it).
      - With O(state=rolled_back), the version to return to (runbook 003's "rollback to version 9") - every
        migration applied above it is rolled back. It must be a version the history or the migration files
        know (a typo fails before anything runs), unless it ends with C(?); V(0) rolls back every migration.
    type: str
  steps:
    description: With O(state=rolled_back), how many of the newest applied migrations to roll back.
    type: int
  migration:
    description:
      - With O(state=rolled_back), the oldest migration to roll back, as a version (V(3.013), V(V3_013)) or a script
        name (V(V3_013__add_index.sql)). It and every migration applied after it are rolled back; if it is not
        applied, nothing is.
    type: str
  down_scripts_path:
    description:
      - With O(state=rolled_back) or O(require_down_scripts), a folder (relative to O(working_dir)) of down scripts, looked up by the version in
        their names - runbook 002's C(rollback_V3_013.sql) (also C(rollback_V3_013_add_index.sql),
        C(rollback-V3_013.sql)), C(V3_013__<description>.sql) or Flyway's undo naming C(U3_013__<description>.sql) -
        in it and its subfolders. Two scripts for one version are refused.
      - It must not overlap a migration location (there the V files are the migrations themselves).
      - C(U<version>__*.sql) files in the local O(locations) are found too, as Flyway Teams finds them.
    type: path
  down_scripts:
    description:
      - With O(state=rolled_back), down scripts given one by one, as a mapping of version to path (relative to
        O(working_dir)); they win over the ones found by name.
    type: dict
    default: {}
  require_down_scripts:
    description:
      - With O(state=deployed) or O(state=status), fail before applying anything when a pending versioned migration
        has no down script (found as O(state=rolled_back) finds them, in O(down_scripts_path), O(down_scripts) or
        as C(U<version>__*.sql) beside the migrations) - runbooks 000 and 002, "rollback scripts prepared".
      - With O(state=deployed) it costs one more C(flyway info) before C(migrate).
    type: bool
    default: false
  timeout:
    description:
      - With O(state=rolled_back), seconds to wait for Flyway's migration lock while another Flyway run holds it
        (V(0) waits as long as it takes).
    type: int
    default: 600
  baseline_version:
    description:
      - With O(command=baseline), the version the existing schema corresponds to (Flyway's default is V(1)).
        Migrations up to it are then never run.
    type: str
  extra_args:
    description:
      - More Flyway flags, each C(-key=value), for example V(-table=schema_history) or V(-outOfOrder=true).
      - Flags that this module sets from its options (C(-url), C(-user), C(-password), C(-locations),
        C(-configFiles), C(-schemas), C(-target), C(-outputType)) are refused.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    description:
      - Runs only Flyway's read-only commands. O(command=migrate) runs C(info) and reports in RV(applied) what
        C(migrate) would apply (and fails if C(migrate) would refuse to run because of failed migrations);
        O(command=repair) runs C(validate) and C(info) and reports what repair would change;
        O(command=baseline) and O(command=undo) run C(info) and predict. O(state=rolled_back) reads the history
        table, checks that every down script is there and reports in RV(rolled_back) what it would run.
  diff_mode:
    support: none
    description: The result lists the migrations applied, pending and failed; there is no before/after text.
notes:
  - "Rolling back: Flyway Community cannot migrate backwards (O(target) lower than the current version only stops
    C(migrate) from going further) and has no C(undo). O(state=rolled_back) does what the runbooks do by hand with
    psql, safely: it refuses before running anything when a migration to roll back has no down script or the
    history records a failed migration; holds Flyway's own PostgreSQL advisory lock (the key C(flyway migrate)
    takes for the same history table), so a migration run started meanwhile waits; and rolls each migration back in
    one transaction with O(db_schema) as search_path - its down script and the removal of its rows from
    C(flyway_schema_history), as if it had never run, so the next C(flyway migrate) applies it again. A failing
    down script leaves that migration applied and the newer ones rolled back; a killed run leaves every migration
    either rolled back or untouched, and running the task again finishes the job."
  - What to roll back is chosen again once the lock is held, from the history as it is then. Down scripts are read
    as UTF-8 and refused before anything runs when they control transactions themselves (C(BEGIN;) ... C(COMMIT;),
    as psql scripts often do) or cannot run in a transaction (C(DROP INDEX CONCURRENTLY) fails there). They run with
    the history's schema first on the search path and the connection's own after it, as Flyway runs migrations.
  - The history table is found as Flyway finds it - O(db_schema) or O(schemas), C(-defaultSchema) and C(-table) in
    O(extra_args), C(FLYWAY_*) variables, C(flyway.defaultSchema), C(flyway.schemas) and C(flyway.table) in
    O(config_files), the JDBC URL's C(currentSchema), else the connection's current schema - and the task fails
    when it is not there.
  - Repeatable migrations (C(R__)) are not rolled back, and rows that C(repair) marked deleted are not applied
    migrations. The other way back is the backup taken before the migration (M(runbook.deploy.pg_backup) with
    C(state=restored)).
  - On PostgreSQL each migration runs in its own transaction, so a failed migration is rolled back and leaves no
    row in C(flyway_schema_history); the earlier migrations of the same run stay applied. A migration that cannot
    run in a transaction (C(CREATE INDEX CONCURRENTLY)) that fails leaves a failed row; Flyway then refuses to
    migrate until O(command=repair) removes it (after you have cleaned up what it half did).
  - Flyway needs Java. The task fails with a hint when the executable cannot start.
  - After C(migrate), C(repair), C(baseline) and C(undo) the module runs C(info) to report the state left behind,
    one more Flyway start (a few seconds for the real Flyway).
seealso:
  - module: runbook.deploy.pg_backup
    description: Take a verified backup before migrating, and restore it to roll back.
  - name: Flyway command line
    description: Flyway's documentation of its commands and parameters.
    link: https://documentation.red-gate.com/fd/flyway-cli-and-api
author:
  - runbook.deploy contributors (@runbook-deploy)
'''

EXAMPLES = r'''
- name: Show what is pending (runbook step "flyway info -configFile=flyway-prod.conf")
  runbook.deploy.flyway_migrate:
    command: info
    working_dir: /srv/app/backend
    config_files: [flyway-prod.conf]
  register: flyway_info

- name: Migrate production, passing the password through the environment
  runbook.deploy.flyway_migrate:
    state: deployed
    login_host: db.internal
    db: app
    login_user: migrator
    login_password: "{{ vault_migrator_password }}"
    locations: [/srv/app/backend/db/migrations]
  register: migrated

- name: Roll back to version 3.011 with the project's rollback_scripts/rollback_V3_013.sql and rollback_V3_012.sql
  runbook.deploy.flyway_migrate:
    state: rolled_back
    target: V3_011
    db_url: "{{ database_url }}"
    working_dir: /srv/app/backend
    locations: [db/migrations]
    down_scripts_path: rollback_scripts
  register: rolled_back

- name: Roll back the newest migration with Flyway's undo naming (U3_013__*.sql beside the migrations)
  runbook.deploy.flyway_migrate:
    state: rolled_back
    steps: 1
    db_url: "{{ database_url }}"
    locations: [/srv/app/backend/db/migrations]

- name: Migrate to V009 and no further, with the application's DATABASE_URL
  runbook.deploy.flyway_migrate:
    db_url: "{{ database_url }}"
    locations: [filesystem:db/migrations]
    working_dir: /srv/app/backend
    target: V009

- name: Predict what migrate would apply (check mode runs info only)
  runbook.deploy.flyway_migrate:
    db_url: "{{ database_url }}"
    locations: [db/migrations]
    working_dir: /srv/app/backend
  check_mode: true
  register: planned

- name: Refuse to deploy when applied migrations were edited
  runbook.deploy.flyway_migrate:
    command: validate
    db_url: "{{ database_url }}"
    locations: [/srv/app/backend/db/migrations]
    extra_args: ["-ignoreMigrationPatterns=*:pending"]

- name: Remove the failed row after cleaning up a failed non-transactional migration
  runbook.deploy.flyway_migrate:
    command: repair
    db_url: "{{ database_url }}"
    locations: [/srv/app/backend/db/migrations]

- name: Start managing an existing database at version 5
  runbook.deploy.flyway_migrate:
    command: baseline
    baseline_version: "5"
    db_url: "{{ database_url }}"
    locations: [/srv/app/backend/db/migrations]
'''

RETURN = r'''
command:
  description: The Flyway command run (in check mode, the one predicted); V(rolled_back) for O(state=rolled_back).
  returned: always
  type: str
  sample: migrate
rolled_back:
  description:
    - With O(state=rolled_back), the migrations rolled back (in check mode, that would be), newest first, each with
      C(version), C(description), C(script) (the migration's), C(down_script) and C(duration) in seconds (null in
      check mode). After a failure, those rolled back before it.
  returned: state=rolled_back
  type: list
  elements: dict
  sample: [{"version": "3.013", "description": "add index", "script": "V3_013__add_index.sql",
            "down_script": "/srv/app/backend/rollback_scripts/rollback_V3_013.sql", "duration": 0.042}]
flyway_version:
  description: Flyway's version, as its JSON output reports it.
  returned: when Flyway ran
  type: str
  sample: 10.22.0
schema_version_before:
  description: The schema version before the command (null for an empty schema).
  returned: when Flyway ran, and with O(state=rolled_back)
  type: str
  sample: '8'
schema_version:
  description:
    - The schema version after the command (in check mode, the version C(migrate) would reach, or
      O(state=rolled_back) would return to).
  returned: when Flyway ran, and with O(state=rolled_back)
  type: str
  sample: '9'
applied:
  description:
    - Migrations applied by this run, in order (in check mode, those C(migrate) would apply). After a failure,
      those applied before it.
    - Each has C(version) (null for repeatable migrations), C(description), C(category), C(type), C(script),
      C(filepath) and C(execution_time) in milliseconds.
  returned: always
  type: list
  elements: dict
  sample: [{"version": "9", "description": "add work order fields", "script": "V009__add_work_order_fields.sql",
            "category": "Versioned", "type": "SQL", "filepath": "/srv/app/db/migrations/V009__add_work_order_fields.sql",
            "execution_time": 42}]
pending:
  description: Migrations still pending after the command (same keys as RV(migrations)).
  returned: when Flyway ran
  type: list
  elements: dict
  sample: []
failed_migrations:
  description: Migrations recorded as failed in the schema history (same keys as RV(migrations)).
  returned: when Flyway ran
  type: list
  elements: dict
  sample: []
migrations:
  description:
    - Every migration C(info) reports after the command, with C(version), C(description), C(category),
      C(type), C(script), C(filepath), C(state) (Pending, Success, Failed, Baseline, Above Target, Outdated,
      Missing, Future, Ignored, ...), C(installed_on) (UTC), C(installed_by), C(execution_time), C(undoable).
  returned: when Flyway ran
  type: list
  elements: dict
  sample: [{"version": "1", "description": "init", "state": "Success", "script": "V1__init.sql"}]
flyway_warnings:
  description: Warnings from Flyway's JSON output (kept apart from Ansible's own C(warnings)).
  returned: always
  type: list
  elements: str
  sample: []
validation:
  description: The validation result (O(command=validate)).
  returned: command=validate
  type: dict
  contains:
    successful:
      description: Whether validation passed (a failed validation fails the task).
      type: bool
      sample: true
    count:
      description: Migrations validated.
      type: int
      sample: 12
    invalid_migrations:
      description: The invalid migrations, each with C(version), C(description), C(script), C(code) and C(message).
      type: list
      elements: dict
      sample: [{"version": "2", "script": "V2__orders.sql", "code": "CHECKSUM_MISMATCH", "message": "Migration checksum mismatch ..."}]
repair:
  description:
    - What O(command=repair) did (in check mode, would do) - C(removed) failed rows, C(deleted) (missing
      migrations marked deleted), C(aligned) (checksums and descriptions updated), each a list of
      C(version), C(description), C(script); and Flyway's C(actions).
  returned: command=repair
  type: dict
  sample: {"actions": ["Removed failed migrations"], "removed": [{"version": "3", "description": "index", "script": "V3__index.sql"}],
           "deleted": [], "aligned": []}
baseline_version:
  description: The version recorded by O(command=baseline).
  returned: command=baseline
  type: str
  sample: '5'
error:
  description:
    - On failure, Flyway's error - C(code) (such as C(FAILED_VERSIONED_MIGRATION), C(DB_CONNECTION),
      C(VALIDATE_ERROR)), C(message), C(script), C(path), C(line), C(sql_state), C(db_message) and the
      C(causes) chain.
  returned: when Flyway reported an error
  type: dict
  sample: {"code": "FAILED_VERSIONED_MIGRATION", "script": "V3__orders.sql", "line": 4, "sql_state": "42P01",
           "db_message": "ERROR: relation \"nope\" does not exist"}
executed_commands:
  description: The Flyway command lines run, in order. They never contain the URL, user or password (those go through the environment).
  returned: always
  type: list
  elements: str
  sample: ["/opt/flyway/flyway migrate -outputType=json -locations=filesystem:/srv/app/db/migrations -target=9"]
'''

import os
import re
import shutil
import traceback

try:
    from urllib.parse import unquote
except ImportError:  # pragma: no cover - Python 2 is not supported
    pass

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.runbook.deploy.plugins.module_utils import down_migrations as down
from ansible_collections.runbook.deploy.plugins.module_utils import flyway as fw
from ansible_collections.runbook.deploy.plugins.module_utils import postgres as pg
from ansible_collections.runbook.deploy.plugins.module_utils.command import CommandRunner

# state (the names prisma_migrate uses) -> the Flyway command it runs; rolled_back is the module's own down path.
STATE_COMMANDS = {'status': 'info', 'deployed': 'migrate', 'rolled_back': 'rolled_back'}


class FlywayMigrate(object):
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.runner = CommandRunner(module)
        self.check = module.check_mode
        self.command = STATE_COMMANDS[self.params['state']] if self.params['state'] else (self.params['command'] or
                                                                                          'migrate')
        self.result = dict(changed=False, command=self.command, applied=[], flyway_warnings=[],
                           executed_commands=self.runner.executed)

    # -- inputs ----------------------------------------------------------------------------------------------
    def validate(self):
        p = self.params
        self.cwd = p['working_dir'] or os.getcwd()
        if not os.path.isdir(self.cwd):
            raise fw.FlywayError("working_dir '%s' does not exist or is not a directory" % self.cwd)
        # The down path runs no Flyway command: a host without Flyway (or Java) can still roll back.
        self.executable = self.find_executable(p['executable']) if self.command != 'rolled_back' else None
        self.config_files = []
        for path in p['config_files']:
            absolute = os.path.join(self.cwd, path)
            if not os.path.isfile(absolute):
                raise fw.FlywayError("config_files: '%s' does not exist (relative paths are taken from working_dir %s)"
                                     % (path, self.cwd))
            self.config_files.append(absolute)
        self.locations = []
        local = dict(fw.location_dirs(p['locations'], self.cwd))
        for location in p['locations']:
            if location in local:
                if not os.path.isdir(local[location]) and not p['allow_empty']:
                    raise fw.FlywayError("locations: directory '%s' does not exist (%s); Flyway would only warn and find "
                                         "no migrations. Fix the path, or set allow_empty=true for a new project without "
                                         "migrations yet" % (location, local[location]))
                self.locations.append(fw.flyway_location(location, local[location]))
            else:
                self.locations.append(location)
        self.refuse_empty_locations(local)
        fw.check_extra_args(p['extra_args'])
        self.target = fw.normalize_target(p['target'])
        if self.target and self.command in ('repair', 'baseline'):
            raise fw.FlywayError('target does not apply to command=%s; it limits info, migrate, validate and undo'
                                 % self.command)
        for option in ('steps', 'migration'):
            if p[option] not in (None, '') and self.command != 'rolled_back':
                raise fw.FlywayError('%s is only used with state=rolled_back' % option)
        finding = self.command == 'rolled_back' or (p['require_down_scripts'] and self.command in ('info', 'migrate'))
        if (p['down_scripts_path'] or p['down_scripts']) and not finding:
            raise fw.FlywayError('down_scripts_path and down_scripts are only used with state=rolled_back, or with '
                                 'require_down_scripts and state=status or state=deployed')
        if p['require_down_scripts'] and self.command not in ('info', 'migrate'):
            raise fw.FlywayError('require_down_scripts is only used with state=status or state=deployed')
        if self.command == 'rolled_back' and self.target in ('latest', 'current', 'next'):
            raise fw.FlywayError('target: with state=rolled_back give the version to return to (V009, 3.011), not %s'
                                 % self.target)
        if p['baseline_version'] and self.command != 'baseline' and not any(
                a.startswith('-baselineOnMigrate') for a in p['extra_args']):
            raise fw.FlywayError('baseline_version applies to command=baseline (or migrate with '
                                 'extra_args=[-baselineOnMigrate=true])')
        if p['baseline_version'] and not fw.VERSION_RE.match(p['baseline_version']):
            raise fw.FlywayError("baseline_version '%s' is not a Flyway version (digits separated by dots)"
                                 % p['baseline_version'])
        self.url, self.conn = fw.connection_settings(p)
        self.user = (self.conn or {}).get('user')
        self.password = (self.conn or {}).get('password')
        if not self.url and not self.config_files:
            raise fw.FlywayError('no database given: set db_url (jdbc:postgresql://host:port/database or '
                                 'postgres://...), or login_host and db, unless config_files set flyway.url')
        if self.password:
            self.runner.mask.append(self.password)
        self.schemas = [p['db_schema']] if p['db_schema'] else p['schemas']

    def refuse_empty_locations(self, local):
        """Local locations without a single migration are nearly always a wrong path: Flyway would report nothing
        pending and succeed. Locations Flyway resolves itself (classpath:, s3:) are not looked into."""
        p = self.params
        if p['allow_empty'] or not p['locations'] or len(local) != len(p['locations']):
            return
        # Custom file naming (flags or configuration files) cannot be judged by Flyway's default names.
        any_name = bool(self.config_files) or any(
            arg.lstrip('-').startswith(('sqlMigration', 'repeatableSqlMigration')) for arg in p['extra_args'])
        if sum(fw.count_migration_files(path, any_name) for path in local.values() if os.path.isdir(path)):
            return
        raise fw.FlywayError(
            'locations: %s hold%s no migrations (no %s file), so Flyway would report nothing pending; this is nearly '
            'always a wrong path. Point locations at the migrations folder, or set allow_empty=true for a new project '
            'without migrations yet' % (', '.join("'%s'" % path for path in local.values()),
                                        's' if len(local) == 1 else '',
                                        'V<version>__<description>.sql or R__<description>.sql' if not any_name
                                        else 'migration'))

    def find_executable(self, name):
        if '/' in name:
            path = os.path.join(self.cwd, name)
            if not os.path.isfile(path):
                raise fw.FlywayError("executable '%s' does not exist" % path)
            if not os.access(path, os.X_OK):
                raise fw.FlywayError("executable '%s' is not executable (chmod +x, or point executable at the flyway "
                                     "script)" % path)
            return path
        found = shutil.which(name)
        if not found:
            raise fw.FlywayError("executable '%s' was not found in PATH; install the Flyway command line or set "
                                 "executable to its path" % name)
        return found

    # -- running -----------------------------------------------------------------------------------------------
    def flyway(self, command, allow_error=False):
        """Run one Flyway command; return (rc, doc, error details or None)."""
        p = self.params
        argv, env = fw.build_invocation(
            self.executable, command, locations=self.locations, config_files=self.config_files, schemas=self.schemas,
            target=self.target, baseline_version=p['baseline_version'], extra_args=p['extra_args'],
            url=self.url, user=self.user, password=self.password)
        rc, out, err = self.runner.run(argv, env=env, cwd=self.cwd)
        doc = fw.parse_json(command, rc, out, err)
        if doc.get('flywayVersion'):
            self.result['flyway_version'] = doc['flywayVersion']
        error = fw.error_details(doc)
        if error is None and rc != 0:
            raise fw.FlywayError('flyway %s exited with code %s without reporting an error: %s'
                                 % (command, rc, fw.last_lines('%s\n%s' % (err, out))))
        if error is not None and not allow_error:
            self.result['error'] = error
            raise fw.FlywayError(fw.describe_error(command, rc, error))
        return rc, doc, error

    def info(self):
        dummy, doc, dummy_err = self.flyway('info')
        return fw.summarize_info(doc)

    def report_info(self, info):
        self.result.update(schema_version=info['schema_version'], migrations=info['migrations'],
                           pending=info['pending'], failed_migrations=info['failed'])

    # -- commands ------------------------------------------------------------------------------------------------
    def run(self):
        getattr(self, 'do_%s' % self.command)()
        return self.result

    def do_info(self):
        info = self.info()
        self.result['schema_version_before'] = info['schema_version']
        self.report_info(info)
        if self.params['require_down_scripts']:
            self.require_down_scripts(info)

    def require_down_scripts(self, info):
        """Every versioned migration about to be applied has its down script (down_migrations.require_scripts)."""
        found = self.down_scripts_by_version()
        scripts = [(fw.migration_name(m), found.get(fw.version_key(m['version']), []))
                   for m in info['pending'] if m['version']]
        try:
            down.require_scripts(scripts, 'rollback_V<version>.sql in down_scripts_path, or U<version>__*.sql beside '
                                          'the migrations')
        except down.DownMigrationError as exc:
            raise fw.FlywayError(str(exc))

    def do_validate(self):
        dummy, doc, dummy_err = self.flyway('validate')
        validation = fw.summarize_validate(doc)
        self.result['validation'] = validation
        self.result['flyway_warnings'] = validation['warnings']
        if not validation['successful']:
            raise fw.FlywayError('flyway validate found %d invalid migration(s): %s'
                                 % (len(validation['invalid_migrations']), fw.describe_invalid(validation)))

    def do_migrate(self):
        if self.params['require_down_scripts'] and not self.check:
            self.require_down_scripts(self.info())
        if self.check:
            info = self.info()
            self.result['schema_version_before'] = info['schema_version']
            self.report_info(info)
            if self.params['require_down_scripts']:
                self.require_down_scripts(info)
            if info['failed']:
                raise fw.FlywayError('migrate would fail: the schema history records failed migration(s) %s; clean up '
                                     'what they did, then run command=repair'
                                     % ', '.join(fw.migration_name(m) for m in info['failed']))
            would = list(info['pending'])
            self.result['applied'] = would
            versions = [m['version'] for m in would if m['version']]
            self.result['schema_version'] = versions[-1] if versions else info['schema_version']
            self.result['changed'] = bool(would)
            return
        rc, doc, error = self.flyway('migrate', allow_error=True)
        if error is not None and 'migrations' not in doc:
            self.result['error'] = error
            raise fw.FlywayError(fw.describe_error('migrate', rc, error))
        summary = fw.summarize_migrate(doc)
        self.result.update(schema_version_before=summary['schema_version_before'], applied=summary['applied'],
                           flyway_warnings=summary['warnings'])
        self.result['changed'] = summary['executed'] > 0
        if error is not None or not summary['success']:
            self.result['error'] = error
            message = fw.describe_error('migrate', rc, error or dict(code='ERROR', message='success is false'))
            self.after_failure(message)
        self.report_info(self.info())

    def after_failure(self, message):
        """Read the state Flyway left behind, then fail with message plus that state."""
        applied = self.result['applied']
        try:
            info = self.info()
            self.report_info(info)
            state = ('; schema now at version %s' % info['schema_version']) if info['schema_version'] else \
                '; schema still empty'
            if applied:
                state += ', after applying %s' % ', '.join(fw.migration_name(m) for m in applied)
            if info['failed']:
                state += ('; failed migration(s) recorded: %s - clean up, then run command=repair'
                          % ', '.join(fw.migration_name(m) for m in info['failed']))
            else:
                state += '; the failed migration was rolled back and is still pending'
        except fw.FlywayError as exc:
            state = '; could not read the state afterwards: %s' % exc
        raise fw.FlywayError(message + state)

    def do_repair(self):
        info = self.info()
        self.result['schema_version_before'] = info['schema_version']
        if self.check:
            dummy, doc, dummy_err = self.flyway('validate')
            validation = fw.summarize_validate(doc)
            repair = fw.predict_repair(validation, info)
            self.report_info(info)
        else:
            dummy, doc, dummy_err = self.flyway('repair')
            repair = fw.summarize_repair(doc)
            self.result['flyway_warnings'] = repair['warnings']
            self.report_info(self.info())
        self.result['repair'] = repair
        self.result['changed'] = bool(repair['removed'] or repair['deleted'] or repair['aligned'])

    def do_baseline(self):
        info = self.info()
        self.result['schema_version_before'] = info['schema_version']
        version = self.params['baseline_version'] or '1'
        baselined = [m for m in info['migrations'] if m['category'] == 'Baseline']
        if self.check:
            self.report_info(info)
            if baselined:
                self.result['baseline_version'] = baselined[-1]['version']
            elif info['applied']:
                raise fw.FlywayError('baseline would fail: the schema history already contains applied migrations (%s)'
                                     % ', '.join(fw.migration_name(m) for m in info['applied']))
            else:
                self.result.update(changed=True, baseline_version=version, schema_version=version)
            return
        dummy, doc, dummy_err = self.flyway('baseline')
        self.result['baseline_version'] = doc.get('baselineVersion')
        self.result['flyway_warnings'] = [str(w) for w in doc.get('warnings') or []]
        self.result['changed'] = bool(doc.get('successfullyBaselined')) and not baselined
        self.report_info(self.info())

    def do_undo(self):
        info = self.info()
        self.result['schema_version_before'] = info['schema_version']
        if self.check:
            self.report_info(info)
            versioned = [m for m in info['applied'] if m['version'] and m['category'] == 'Versioned']
            if versioned:
                self.result['applied'] = [versioned[-1]]
                self.result['changed'] = True
            return
        dummy, doc, dummy_err = self.flyway('undo')
        undone = doc.get('undoneMigrations') or doc.get('migrations') or []
        self.result['applied'] = [fw.migration_entry(m) for m in undone if isinstance(m, dict)]
        self.result['flyway_warnings'] = [str(w) for w in doc.get('warnings') or []]
        count = doc.get('migrationsUndone')
        self.result['changed'] = bool(count if isinstance(count, int) else undone)
        self.report_info(self.info())

    # -- the down path (state=rolled_back) ------------------------------------------------------------------------
    def down_path_database(self):
        """(libpq keywords, history schema or None for the connection's current schema, history table), settled as
        Flyway settles them: its flags (extra_args) over FLYWAY_* environment variables over configuration files."""
        p = self.params
        settings, toml = fw.read_config_files(self.config_files) if self.config_files else ({}, False)
        for key, variable in (('defaultSchema', 'FLYWAY_DEFAULT_SCHEMA'), ('schemas', 'FLYWAY_SCHEMAS'),
                              ('table', 'FLYWAY_TABLE'), ('url', 'FLYWAY_URL'), ('user', 'FLYWAY_USER'),
                              ('password', 'FLYWAY_PASSWORD')):
            if os.environ.get(variable):
                settings[key] = os.environ[variable]
        for arg in p['extra_args']:
            key, dummy, value = arg.lstrip('-').partition('=')
            if key in ('defaultSchema', 'table'):
                settings[key] = value
        conn = dict(self.conn or {})
        url = p['db_url'] if p['db_url'] and p['db_url'].startswith('jdbc:') else settings.get('url', '')
        if not conn.get('dbname'):
            try:
                from_file = fw.conn_from_jdbc(settings['url']) if settings.get('url') else None
            except fw.FlywayError:
                from_file = None
            if not from_file:
                raise fw.FlywayError('state=rolled_back connects to the database itself and found no database it can '
                                     'reach: give it with db_url (postgres:// or jdbc:postgresql://host:port/database) '
                                     'or login_host and db%s' % (
                                         ' (a flyway.toml is not read for this)' if toml else
                                         ', or flyway.url=jdbc:postgresql://host:port/database in config_files'))
            from_file.update(conn)
            conn = from_file
        for key in ('user', 'password'):
            if not conn.get(key) and settings.get(key):
                conn[key] = settings[key]
        conn.setdefault('user', 'postgres')
        conn.setdefault('port', 5432)
        conn.setdefault('connect_timeout', p['connect_timeout'])
        if conn.get('password'):
            self.runner.mask.append(conn['password'])
        file_schemas = [name.strip() for name in settings.get('schemas', '').split(',') if name.strip()]
        current = re.search(r'[?&]currentSchema=([^&]+)', url or '')
        schema = (settings.get('defaultSchema') or (self.schemas or file_schemas or [None])[0]
                  or (unquote(current.group(1)).split(',')[0] if current else None))
        return conn, schema, settings.get('table') or fw.HISTORY_TABLE

    def down_scripts_by_version(self):
        """{version key: [paths]} from down_scripts_path (any naming) and the local locations (U naming only)."""
        p = self.params
        found = {}
        locations = [path for dummy, path in fw.location_dirs(p['locations'], self.cwd) if os.path.isdir(path)]
        folders = [(path, True) for path in locations]
        if p['down_scripts_path']:
            folder = os.path.normpath(os.path.join(self.cwd, p['down_scripts_path']))
            if not os.path.isdir(folder) and self.command == 'rolled_back':
                raise fw.FlywayError("down_scripts_path: '%s' is not a directory (relative paths are taken from "
                                     'working_dir %s); nothing was rolled back' % (p['down_scripts_path'], self.cwd))
            # require_down_scripts: a folder that does not exist yet holds no script; the refusal names what is missing.
            for location in locations:
                inside = os.path.commonpath([folder, location])
                if inside in (folder, location):
                    # V<version>__*.sql there are the migrations themselves: never run one as its own down script.
                    raise fw.FlywayError("down_scripts_path '%s' overlaps the migration location %s; keep the down "
                                         'scripts in a folder of their own (runbook 002: rollback_scripts/). Nothing '
                                         'was changed' % (p['down_scripts_path'], location))
            if os.path.isdir(folder):
                folders.append((folder, False))
        for folder, undo_only in folders:
            for key, paths in fw.down_scripts_in(folder, undo_only).items():
                found.setdefault(key, []).extend(paths)
        for version, path in (p['down_scripts'] or {}).items():
            try:
                key = fw.version_key(fw.normalize_target(str(version)))
            except (fw.FlywayError, ValueError):
                raise fw.FlywayError("down_scripts: '%s' is not a version (3.013, V3_013)" % version)
            found[key] = [os.path.join(self.cwd, str(path))]
        return found

    def check_boundary(self, rows, value, option):
        """Refuse a target or migration that neither the history nor the migration files know (a typo)."""
        p = self.params
        if value.endswith('?') or value.lower().endswith('.sql'):
            return
        key = fw.version_key(value)
        local = fw.local_versions(path for dummy, path in fw.location_dirs(p['locations'], self.cwd))
        if key != (0,) and key not in fw.known_versions(rows, local):
            applied = [r['version'] for r in fw.applied_versioned(rows)]
            raise fw.FlywayError("%s '%s' is neither in the schema history nor among the migration files (applied: %s); "
                                 'nothing was rolled back. Give a version that exists%s'
                                 % (option, p[option], ', '.join(applied[-5:]) or 'none',
                                    ', or end it with ? to roll back everything above it anyway'
                                    if option == 'target' else ''))

    def plan_rollback(self, rows):
        """What to roll back, newest first, each with its down script read and checked; refused before anything
        runs (a failed migration recorded, an unknown target, a missing, ambiguous or unusable down script)."""
        p = self.params
        failed = [r for r in rows if not r['success']]
        if failed:
            raise fw.FlywayError('the schema history records failed migration(s) %s; nothing was rolled back. Clean '
                                 'up what they did, run command=repair, then roll back'
                                 % ', '.join(r['script'] or r['version'] for r in failed))
        target = self.target
        if target is not None:
            self.check_boundary(rows, target, 'target')
            target = target.rstrip('?')
        migration = p['migration']
        if migration is not None:
            if migration.lower().endswith('.sql'):
                scripts = set(r['script'] for r in rows) | set(os.path.basename(r['script'] or '') for r in rows)
                if migration not in scripts:
                    raise fw.FlywayError("migration '%s' is not in the schema history; nothing was rolled back"
                                         % migration)
            else:
                try:
                    migration = fw.normalize_target(migration)
                except fw.FlywayError:
                    migration = None
                if migration in (None, 'latest', 'current', 'next') or migration.endswith('?'):
                    raise fw.FlywayError("migration '%s' is neither a version (3.013, V3_013) nor a script name "
                                         '(V3_013__add_index.sql); nothing was rolled back' % p['migration'])
                self.check_boundary(rows, migration, 'migration')
        targets = fw.select_rollback(rows, target=target, steps=p['steps'], migration=migration)
        scripts = self.down_scripts_by_version()
        where = p['down_scripts_path'] or (p['locations'][0] if p['locations'] else '.')
        plan = []
        for row in targets:
            candidates = scripts.get(fw.version_key(row['version']), [])
            if len(candidates) > 1:
                raise fw.FlywayError('more than one down script for version %s: %s; keep one, or name it in down_scripts. '
                                     'Nothing was rolled back' % (row['version'], ', '.join(candidates)))
            plan.append(dict(name=row['script'] or 'V%s' % row['version'], version=row['version'],
                             description=row['description'], script=row['script'],
                             down_script=candidates[0] if candidates else None,
                             expected=candidates[0] if candidates else '%s/rollback_V%s.sql or U%s__*.sql' % (
                                 where, row['version'].replace('.', '_'), row['version'].replace('.', '_'))))
        try:
            down.refuse_missing(plan, 'add it to down_scripts_path (rollback_V<version>.sql) or beside the migrations '
                                      '(U<version>__<description>.sql), or name it in down_scripts; or go back with the '
                                      'backup taken before the migration (runbook.deploy.pg_backup state=restored)')
            for item in plan:
                item['sql'] = down.read_script(item['name'], item['down_script'])
        except down.DownMigrationError as exc:
            raise fw.FlywayError(str(exc))
        return plan

    def read_history(self, connection, schema, table):
        rows = fw.read_history(connection, schema, table)
        if rows is None:
            raise fw.FlywayError('there is no %s in schema %s, so nothing can be rolled back there; check db_schema '
                                 '(or schemas, -defaultSchema) and -table' % (table, schema))
        return rows

    def do_rolled_back(self):
        p = self.params
        if not pg.HAS_PSYCOPG2:
            raise fw.FlywayError(missing_required_lib('psycopg2') + ' (state=rolled_back connects to the database)')
        self.result['rolled_back'] = []
        conn, schema, table = self.down_path_database()
        connection = pg.connect(conn)
        try:
            if schema is None:
                # As Flyway: without a schema configured, the connection's current one holds the history.
                schema = pg.query_all(connection, 'SELECT current_schema()')[0][0] or 'public'
            rows = self.read_history(connection, schema, table)
            self.result['schema_version_before'] = fw.current_version(rows)
            plan = self.plan_rollback(rows)
            if not plan:
                self.result['schema_version'] = self.result['schema_version_before']
                return
            if self.check:
                self.result['changed'] = True
                self.result['rolled_back'] = [dict(((k, v) for k, v in item.items()
                                                    if k not in ('name', 'expected', 'sql')), duration=None)
                                              for item in plan]
                undone = set(item['version'] for item in plan)
                self.result['schema_version'] = fw.current_version([r for r in rows if r['version'] not in undone])
                return
            qualified = pg.qualified(connection, schema, table)
            lock = down.AdvisoryLock(connection, fw.lock_key(schema, table), p['timeout'], (
                "Flyway's migration lock on %s" % qualified,
                'Wait for the other Flyway run (flyway migrate) to finish, or raise timeout'))

            def plan_under_lock():
                # A flyway migrate that held the lock may have applied something newer meanwhile.
                fresh = self.read_history(connection, schema, table)
                self.result['schema_version_before'] = fw.current_version(fresh)
                return self.plan_rollback(fresh)

            def run_one(item):
                return down.run_down_script(
                    connection, item['name'], item['sql'],
                    claim=('SELECT installed_rank FROM %s WHERE version = %%s AND success FOR UPDATE' % qualified,
                           (item['version'],)),
                    record=('DELETE FROM %s WHERE version = %%s' % qualified, (item['version'],)),
                    search_path=pg.quote_ident(connection, schema), source=item['down_script'])
            done = []
            try:
                done = down.roll_back(lock, plan_under_lock, run_one)
            except Exception as exc:
                done = getattr(exc, 'rolled_back', [])
                raise
            finally:
                self.result['rolled_back'] = [dict((k, v) for k, v in item.items() if k != 'name') for item in done]
                self.result['changed'] = bool(done)
                try:
                    self.result['schema_version'] = fw.current_version(fw.read_history(connection, schema, table))
                except Exception:  # pylint: disable=broad-except
                    pass  # the error that got us here matters more
        finally:
            connection.close()


def main():
    argument_spec = pg.postgres_common_argument_spec()
    # The names Flyway users know (url, password) stay as aliases of the options prisma_migrate and pg_backup share.
    argument_spec['db_url']['aliases'] = ['database_url', 'url']
    argument_spec['login_password']['aliases'] = ['password']
    argument_spec.update(
        state=dict(type='str', choices=list(STATE_COMMANDS)),
        command=dict(type='str', choices=list(fw.COMMANDS)),
        executable=dict(type='str', default='flyway'),
        working_dir=dict(type='path'),
        config_files=dict(type='list', elements='path', default=[]),
        locations=dict(type='list', elements='str', default=[]),
        allow_empty=dict(type='bool', default=False),
        schemas=dict(type='list', elements='str', default=[]),
        db_schema=dict(type='str'),
        target=dict(type='str'),
        steps=dict(type='int'),
        migration=dict(type='str'),
        down_scripts_path=dict(type='path'),
        down_scripts=dict(type='dict', default={}),
        timeout=dict(type='int', default=600),
        require_down_scripts=dict(type='bool', default=False),
        baseline_version=dict(type='str'),
        extra_args=dict(type='list', elements='str', default=[]),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[('state', 'command'), ('schemas', 'db_schema'), ('steps', 'migration', 'target')],
        required_if=[('state', 'rolled_back', ('steps', 'migration', 'target'), True)],
    )
    job = FlywayMigrate(module)
    try:
        job.validate()
        result = job.run()
    except (fw.FlywayError, pg.PostgresError) as exc:
        module.fail_json(msg=to_native(exc), **job.result)
    except down.DownMigrationError as exc:
        module.fail_json(msg=to_native(exc), error=dict(migration=exc.migration, db_message=exc.database_message),
                         **job.result)
    except Exception as exc:  # pylint: disable=broad-except
        if pg.HAS_PSYCOPG2 and isinstance(exc, pg.psycopg2.Error):
            module.fail_json(msg='flyway_migrate: database error: %s' % down.pg_message(exc), **job.result)
        module.fail_json(msg='flyway_migrate failed unexpectedly: %s' % to_native(exc), exception=traceback.format_exc(),
                         **job.result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
