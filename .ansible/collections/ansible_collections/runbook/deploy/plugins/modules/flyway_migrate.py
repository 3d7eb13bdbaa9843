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
description:
  - Drives the Flyway command line (Flyway 9, 10 or 11) with C(-outputType=json) and reads its JSON output;
    O(command=info) lists migrations, O(command=migrate) applies pending ones (up to O(target)),
    O(command=validate) checks applied migrations against the files, O(command=repair) fixes the schema
    history, O(command=baseline) starts managing an existing database, O(command=undo) undoes the last
    migration (paid Flyway editions only).
  - Returns the schema version before and after, the migrations applied, still pending and failed, and
    Flyway's warnings. A failed migration fails the task with the script name, line and database error, and
    the result still lists what Flyway left behind.
  - The database password (O(password), or the one inside a C(postgres://) O(url)) reaches Flyway through
    the C(FLYWAY_PASSWORD) environment variable, never its command line.
options:
  command:
    description:
      - The Flyway command to run.
      - V(info) and V(validate) only read. O(command=validate) fails the task when validation fails (Flyway
        itself exits 0 then), including when migrations are pending, as Flyway's validate does.
      - V(migrate) reports a change only when it applied at least one migration.
      - V(repair) removes failed rows from the schema history, aligns checksums and descriptions of applied
        migrations with the files, and marks applied migrations missing from the files as deleted.
      - V(baseline) records O(baseline_version) as the version of an existing, unmanaged schema.
      - V(undo) needs Flyway Teams/Enterprise (the Redgate edition); with the Community edition the task
        fails with a message saying so.
    type: str
    default: migrate
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
  url:
    description:
      - The database, as a JDBC URL (V(jdbc:postgresql://db.internal:5432/app)) or as a C(postgres://) URL
        the way C(DATABASE_URL) carries it; a C(postgres://) URL is turned into a JDBC one and its user and
        password are used unless O(user) and O(password) are given.
      - Passed in C(FLYWAY_URL), not on the command line. Required unless O(config_files) set C(flyway.url).
    type: str
  user:
    description: Database user (C(FLYWAY_USER)).
    type: str
  password:
    description: Database password, passed in C(FLYWAY_PASSWORD); never on the command line nor in results.
    type: str
  schemas:
    description: Schemas Flyway manages (C(-schemas)); the first one holds C(flyway_schema_history).
    type: list
    elements: str
    default: []
  target:
    description:
      - Migrate (and report) only up to this version, as in the runbooks' "migrate to V009". A leading C(V)
        is dropped and underscores become dots (V(V009) is version 9, V(V3_008) is 3.008); V(latest),
        V(current) and V(next) are Flyway's own. Flyway fails when no migration has that version (add C(?)
        to allow it).
      - C(migrate) never goes back to an older version; see the notes for rolling back.
    type: str
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
        O(command=baseline) and O(command=undo) run C(info) and predict.
  diff_mode:
    support: none
    description: The result lists the migrations applied, pending and failed; there is no before/after text.
notes:
  - "Rolling back: Flyway Community cannot migrate backwards (O(target) lower than the current version only stops
    C(migrate) from going further) and has no C(undo). Roll back by restoring the backup taken before the
    migration (M(runbook.deploy.pg_backup) with C(state=restored)), or by shipping a new forward migration that
    reverts the change. With Flyway Teams/Enterprise and C(U<version>__) undo scripts, O(command=undo) works."
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
    url: jdbc:postgresql://db.internal:5432/app
    user: migrator
    password: "{{ vault_migrator_password }}"
    locations: [/srv/app/backend/db/migrations]
  register: migrated

- name: Migrate to V009 and no further, with the application's DATABASE_URL
  runbook.deploy.flyway_migrate:
    url: "{{ database_url }}"
    locations: [filesystem:db/migrations]
    working_dir: /srv/app/backend
    target: V009

- name: Predict what migrate would apply (check mode runs info only)
  runbook.deploy.flyway_migrate:
    url: "{{ database_url }}"
    locations: [db/migrations]
    working_dir: /srv/app/backend
  check_mode: true
  register: planned

- name: Refuse to deploy when applied migrations were edited
  runbook.deploy.flyway_migrate:
    command: validate
    url: "{{ database_url }}"
    locations: [/srv/app/backend/db/migrations]
    extra_args: ["-ignoreMigrationPatterns=*:pending"]

- name: Remove the failed row after cleaning up a failed non-transactional migration
  runbook.deploy.flyway_migrate:
    command: repair
    url: "{{ database_url }}"
    locations: [/srv/app/backend/db/migrations]

- name: Start managing an existing database at version 5
  runbook.deploy.flyway_migrate:
    command: baseline
    baseline_version: "5"
    url: "{{ database_url }}"
    locations: [/srv/app/backend/db/migrations]
'''

RETURN = r'''
command:
  description: The Flyway command run (in check mode, the one predicted).
  returned: always
  type: str
  sample: migrate
flyway_version:
  description: Flyway's version, as its JSON output reports it.
  returned: when Flyway ran
  type: str
  sample: 10.22.0
schema_version_before:
  description: The schema version before the command (null for an empty schema).
  returned: when Flyway ran
  type: str
  sample: '8'
schema_version:
  description: The schema version after the command (in check mode, the version C(migrate) would reach).
  returned: when Flyway ran
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
import shutil
import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.runbook.deploy.plugins.module_utils import flyway as fw
from ansible_collections.runbook.deploy.plugins.module_utils.command import CommandRunner


class FlywayMigrate(object):
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.runner = CommandRunner(module)
        self.check = module.check_mode
        self.result = dict(changed=False, command=self.params['command'], applied=[], flyway_warnings=[],
                           executed_commands=self.runner.executed)

    # -- inputs ----------------------------------------------------------------------------------------------
    def validate(self):
        p = self.params
        self.cwd = p['working_dir'] or os.getcwd()
        if not os.path.isdir(self.cwd):
            raise fw.FlywayError("working_dir '%s' does not exist or is not a directory" % self.cwd)
        self.executable = self.find_executable(p['executable'])
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
        if self.target and p['command'] in ('repair', 'baseline'):
            raise fw.FlywayError('target does not apply to command=%s; it limits info, migrate, validate and undo'
                                 % p['command'])
        if p['baseline_version'] and p['command'] != 'baseline' and not any(
                a.startswith('-baselineOnMigrate') for a in p['extra_args']):
            raise fw.FlywayError('baseline_version applies to command=baseline (or migrate with '
                                 'extra_args=[-baselineOnMigrate=true])')
        if p['baseline_version'] and not fw.VERSION_RE.match(p['baseline_version']):
            raise fw.FlywayError("baseline_version '%s' is not a Flyway version (digits separated by dots)"
                                 % p['baseline_version'])
        self.url, self.user, self.password = None, p['user'], p['password']
        if p['url']:
            self.url, url_user, url_password = fw.jdbc_from_url(p['url'])
            self.user = self.user or url_user
            self.password = self.password or url_password
        elif not self.config_files:
            raise fw.FlywayError('url is required (jdbc:postgresql://host:port/database or postgres://...), unless '
                                 'config_files set flyway.url')
        if self.password:
            self.runner.mask.append(self.password)

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
            self.executable, command, locations=self.locations, config_files=self.config_files, schemas=p['schemas'],
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
        command = self.params['command']
        getattr(self, 'do_%s' % command)()
        return self.result

    def do_info(self):
        info = self.info()
        self.result['schema_version_before'] = info['schema_version']
        self.report_info(info)

    def do_validate(self):
        dummy, doc, dummy_err = self.flyway('validate')
        validation = fw.summarize_validate(doc)
        self.result['validation'] = validation
        self.result['flyway_warnings'] = validation['warnings']
        if not validation['successful']:
            raise fw.FlywayError('flyway validate found %d invalid migration(s): %s'
                                 % (len(validation['invalid_migrations']), fw.describe_invalid(validation)))

    def do_migrate(self):
        if self.check:
            info = self.info()
            self.result['schema_version_before'] = info['schema_version']
            self.report_info(info)
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


def main():
    module = AnsibleModule(
        argument_spec=dict(
            command=dict(type='str', default='migrate', choices=list(fw.COMMANDS)),
            executable=dict(type='str', default='flyway'),
            working_dir=dict(type='path'),
            config_files=dict(type='list', elements='path', default=[]),
            locations=dict(type='list', elements='str', default=[]),
            allow_empty=dict(type='bool', default=False),
            url=dict(type='str', no_log=True),
            user=dict(type='str'),
            password=dict(type='str', no_log=True),
            schemas=dict(type='list', elements='str', default=[]),
            target=dict(type='str'),
            baseline_version=dict(type='str'),
            extra_args=dict(type='list', elements='str', default=[]),
        ),
        supports_check_mode=True,
    )
    job = FlywayMigrate(module)
    try:
        job.validate()
        result = job.run()
    except fw.FlywayError as exc:
        module.fail_json(msg=to_native(exc), **job.result)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='flyway_migrate failed unexpectedly: %s' % to_native(exc), exception=traceback.format_exc(),
                         **job.result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
