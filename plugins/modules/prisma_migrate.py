#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: prisma_migrate
short_description: Apply, inspect, resolve and roll back Prisma Migrate migrations
version_added: 0.1.0
description:
  - Drives the project's own Prisma CLI (C(node_modules/.bin/prisma) in O(project_path), or O(executable)) to
    apply pending migrations (C(prisma migrate deploy)) and to resolve failed ones (C(prisma migrate resolve)).
  - Or, with O(engine=native), does the same itself with psycopg2, recording everything in C(_prisma_migrations)
    exactly as Prisma's schema engine does, for hosts without Node.js, C(node_modules) or Prisma's engines.
  - Reads the state itself from the C(_prisma_migrations) table and the migrations folder, never from the CLI's
    human text alone. A migration is applied when one of its rows has C(finished_at) set and C(rolled_back_at)
    unset, failed when one of its rows has neither, and pending otherwise (no row, or only rolled-back rows).
  - Adds the down path Prisma does not have. With O(state=rolled_back) it runs each migration's down script
    (C(down.sql) beside its C(migration.sql)) in a transaction that also marks the migration rolled back, so
    a later C(prisma migrate deploy) applies it again.
  - The database URL reaches Prisma only through its environment (O(url_env)), never its command line, and
    never appears in the results.
options:
  engine:
    description:
      - What applies and resolves the migrations. Status and the down path (O(state=rolled_back)) are read and run
        by the module itself with either engine.
      - V(cli) runs the project's Prisma CLI, the tool the runbooks name. It needs Node.js and the project's
        C(node_modules).
      - V(native) needs neither. It reads the migrations folder and C(_prisma_migrations) with psycopg2 and
        follows Prisma's schema engine step by step, so the real CLI and this engine can take turns on one
        database (see the notes). Each C(migration.sql) is sent whole, as one query, like Prisma's native engine
        does, so C(DO $$ ... $$) blocks and function bodies work (Prisma's offline JavaScript engine splits
        scripts on C(;) and cannot apply them).
    type: str
    default: cli
    choices: [ cli, native ]
  state:
    description:
      - V(status) changes nothing and returns the applied, pending and failed migrations.
      - V(deployed) applies the pending migrations with C(prisma migrate deploy) and returns those it applied,
        with their durations. Nothing is run when nothing is pending.
      - V(resolved) records the outcome of the failed migration O(migration) as O(as) (C(prisma migrate resolve)),
        after you fixed the database by hand; see the notes.
      - V(rolled_back) runs the down scripts of the newest O(steps) applied migrations, or of O(migration) and
        every migration applied after it, newest first, each in one transaction, and marks them rolled back.
    type: str
    default: deployed
    choices: [ status, deployed, resolved, rolled_back ]
  project_path:
    description:
      - The Node.js project holding the Prisma schema, C(prisma.config.ts) (if any) and C(node_modules).
      - The Prisma CLI runs with this as its working directory, so it finds the project's configuration there.
    type: path
    required: true
  executable:
    description:
      - With O(engine=cli), the Prisma CLI to run. Defaults to C(node_modules/.bin/prisma) in O(project_path), the version the
        project pins.
    type: path
  node_executable:
    description:
      - The Node.js binary that runs the Prisma CLI when the CLI is a Node script (as C(node_modules/.bin/prisma)
        is). Defaults to C(node) from C(PATH); set it when Node.js is installed elsewhere (nvm, asdf).
    type: path
  schema:
    description:
      - The Prisma schema file (or folder), relative to O(project_path) or absolute; passed as C(--schema).
      - Without it Prisma uses its defaults (C(prisma.config.ts), C(package.json), C(prisma/schema.prisma)).
    type: path
  config:
    description:
      - The Prisma configuration file, relative to O(project_path) or absolute; passed as C(--config).
      - Without it Prisma loads C(prisma.config.ts) from O(project_path) if there is one.
    type: path
  migrations_path:
    description:
      - The migrations folder, relative to O(project_path) or absolute.
      - Defaults to C(migrations) beside the schema (O(schema), else the C(package.json) C(prisma.schema)
        setting, else C(prisma/schema.prisma) or C(schema.prisma)). Set it when C(prisma.config.ts) moves the
        migrations elsewhere (C(migrations.path)), since the module cannot evaluate TypeScript.
    type: path
  allow_empty:
    description:
      - Accept a migrations folder (O(migrations_path), or the default one) that is missing or holds no migration
        (no C(<name>/migration.sql)); it then counts as having none, and nothing is pending.
      - Without it such a folder fails the task, naming O(migrations_path) and the folder, because it is nearly
        always a wrong path (Prisma itself would only say C(No pending migrations to apply.)). Set it for a
        brand-new project that has no migrations yet.
    type: bool
    default: false
  url_env:
    description:
      - The environment variable the schema's datasource (or C(prisma.config.ts)) reads the URL from.
    type: str
    default: DATABASE_URL
  db_schema:
    description:
      - The PostgreSQL schema that holds the migrated tables and C(_prisma_migrations).
      - Defaults to the C(schema) query parameter of O(db_url), else V(public). When given, it is passed to
        Prisma as the URL's C(schema) parameter.
      - A driver adapter configured in C(prisma.config.ts) ignores that parameter (it takes the schema from its
        own options); the module then finds the migrations still pending after C(migrate deploy) and fails.
    type: str
  timeout:
    description:
      - Seconds each Prisma CLI run may take before it is stopped (coreutils C(timeout)), and the longest the
        module waits for Prisma's migration lock. V(0) means no limit.
      - With O(engine=native) only the wait for the lock is limited; a migration that started runs to its end
        (stopping a client does not stop the statement on the server).
    type: int
    default: 600
  migration:
    description:
      - With O(state=resolved), the failed migration to resolve (its folder name).
      - With O(state=rolled_back), the oldest migration to roll back. It and every migration applied after it
        are rolled back. If it is not applied, only the applied migrations whose names sort after it are.
    type: str
  as:
    description:
      - With O(state=resolved), how to record the migration.
      - V(rolled_back) after you undid whatever the failed migration did (C(prisma migrate resolve --rolled-back));
        C(migrate deploy) will apply it again.
      - V(applied) after you completed it by hand (C(prisma migrate resolve --applied)). This also marks a pending
        migration applied without running it (baselining).
    type: str
    choices: [ applied, rolled_back ]
  steps:
    description:
      - With O(state=rolled_back), how many of the newest applied migrations to roll back.
      - Every run rolls back that many again; use O(migration) for a target that a second run leaves alone.
    type: int
  down_scripts:
    description:
      - With O(state=rolled_back), down scripts that are not C(down.sql) in the migration's folder, as a mapping
        of migration name to script path (relative to O(project_path) or absolute).
    type: dict
    default: {}
  require_down_scripts:
    description:
      - With O(state=deployed) or O(state=status), fail before applying anything when a pending migration has no
        C(down.sql) beside its C(migration.sql) (runbooks 000 and 002, "rollback scripts prepared"), so that a
        failed deployment can be undone with O(state=rolled_back).
    type: bool
    default: false
extends_documentation_fragment:
  - runbook.deploy.postgres
attributes:
  check_mode:
    support: full
    description: Reads the table and the migrations folder and reports what would be applied, resolved or rolled
      back (RV(status.pending) holds the pending list); runs no Prisma command and writes nothing.
  diff_mode:
    support: none
    description: Migrations have no before/after text worth showing; RV(applied), RV(rolled_back) and RV(resolved)
      list what changed.
notes:
  - The connection options (O(db_url) or O(login_host) and the others) are merged into one C(postgresql://) URL
    that is handed to Prisma in the environment variable O(url_env); the module itself reads and writes
    C(_prisma_migrations) with psycopg2. Prisma-only URL parameters (C(schema), C(connection_limit) and so on) are
    kept for Prisma.
  - Prisma's offline JavaScript schema engine (C(engine = "js") with a driver adapter in C(prisma.config.ts))
    prints no P3018 code when a migration fails. The module then reports P3018 itself, with the migration's name
    and the database message read from C(_prisma_migrations.logs).
  - C(prisma migrate resolve --rolled-back) needs Prisma's native schema engine. When the project has none
    (the JavaScript engine only, as in offline set-ups), the module records the same thing Prisma records, directly
    in C(_prisma_migrations) in one transaction under Prisma's migration lock (it sets C(rolled_back_at) on the
    migration's failed rows), warns, and returns V(direct) in RV(resolved.method).
  - "When a migration fails, the failure message says which of its statements were committed
    (RV(error.statements)). Prisma's JavaScript engine (a driver adapter in C(prisma.config.ts)) splits
    C(migration.sql) on every C(;) and runs the pieces one by one, each committed on its own, and its error does
    not name the failing one; so during C(prisma migrate deploy) the module loads a small recorder into the CLI
    (C(NODE_OPTIONS=--require), a file in a private temporary directory) that notes, for each query the
    C(node-postgres) driver runs without parameters, whether it succeeded and the sha256 of its text (no text, no
    parameter). With another driver the statements are listed as possibly committed. Prisma's native schema
    engine and O(engine=native) send the whole script as one query, which PostgreSQL runs as one transaction:
    nothing of a failed script stays, unless the script has its own C(COMMIT)."
  - O(state=resolved) only records an outcome; it never changes the migrated tables. A failed migration may have
    run some of its statements (Prisma does not wrap migrations in a transaction); undo or complete them first.
  - O(state=rolled_back) refuses, before changing anything, when a migration to roll back has no down script,
    and while a migration is failed. Each down script runs as a whole (dollar-quoted blocks are fine) in its own
    transaction, holding C(pg_advisory_lock(72707369)) like C(prisma migrate deploy), so the two never run side
    by side. If a down script fails, its transaction is rolled back, the migrations rolled back before it stay
    rolled back, and the task fails naming it.
  - O(state=deployed) fails fast, with code P3009, while a migration is failed, as C(prisma migrate deploy) would.
  - The native engine (O(engine=native)) does what Prisma 6's schema engine does on PostgreSQL. It sets
    C(search_path) to the schema (creating the schema when missing), holds C(pg_advisory_lock(72707369)) for the
    whole run, creates C(_prisma_migrations) with Prisma's definition only in a schema without tables (else
    P3005), refuses while a migration is failed (P3009), and refuses a C(migration_lock.toml) of another provider
    (P3019). Per pending migration, in folder order, it inserts a row (random UUID, the sha256 of C(migration.sql),
    C(started_at)), runs the script as one simple query (one implicit transaction unless the script has its own
    C(BEGIN)/C(COMMIT)), then sets C(applied_steps_count) to 1 and C(finished_at). A failing script leaves the row
    failed (C(finished_at) empty) with Prisma's P3018 text and the database error in C(logs), and stops the run.
    O(state=resolved) records what C(prisma migrate resolve) records (P3008, P3011, P3012, P3017 as Prisma).
  - A migration rolled back by O(state=rolled_back) is pending for this module and for C(prisma migrate deploy),
    which applies it again; C(prisma migrate status) still calls the database up to date, because its check
    counts rolled-back rows as present (prisma-engines C(diagnose_migration_history)).
  - Checksums are compared as Prisma compares them, so CRLF checkouts and the unpadded checksums of old Prisma
    versions do not show as edited migrations. Edited migrations (RV(status.modified)) and applied migrations
    missing from the folder (RV(status.not_in_folder)) are reported and warned about with either engine;
    like C(prisma migrate deploy), neither stops a deployment.
seealso:
  - name: Prisma Migrate in production
    description: C(migrate deploy), C(migrate resolve) and the hotfix and roll-back paths.
    link: https://www.prisma.io/docs/orm/prisma-migrate/workflows/patching-and-hotfixing
  - name: Prisma error codes
    description: The P3xxx codes the module reports.
    link: https://www.prisma.io/docs/orm/reference/error-reference#prisma-migrate-schema-engine
author:
  - runbook.deploy contributors (@runbook-deploy)
'''

EXAMPLES = r'''
- name: Show which migrations are applied, pending and failed
  runbook.deploy.prisma_migrate:
    state: status
    project_path: /srv/app/current
    db_url: "{{ database_url }}"
  register: migrations

- name: Apply the pending migrations on a host without Node.js (the native engine)
  runbook.deploy.prisma_migrate:
    state: deployed
    engine: native
    project_path: /srv/app/current
    db_url: "{{ database_url }}"

- name: Apply the pending migrations with the project's own Prisma CLI
  runbook.deploy.prisma_migrate:
    state: deployed
    project_path: /srv/app/current
    db_url: "{{ database_url }}"
    timeout: 1800
  register: deployed

- name: After undoing a failed migration's partial changes by hand, let migrate deploy retry it
  runbook.deploy.prisma_migrate:
    state: resolved
    migration: 20251128000003_phase4_bidirectional_sync_infrastructure
    as: rolled_back
    project_path: /srv/app/current
    db_url: "{{ database_url }}"

- name: Roll back this release's migrations (their down.sql), newest first
  runbook.deploy.prisma_migrate:
    state: rolled_back
    migration: "{{ deployed.applied[0].name }}"
    project_path: /srv/app/previous
    db_url: "{{ database_url }}"
  when: deployed.applied | length > 0

- name: Roll back the newest migration with a down script kept outside the migrations folder
  runbook.deploy.prisma_migrate:
    state: rolled_back
    steps: 1
    project_path: /srv/app/current
    login_host: db.internal
    login_user: app
    login_password: "{{ vault_app_db_password }}"
    db: app
    down_scripts:
      20261103000000_add_order_status: ops/down/20261103000000_add_order_status.sql
'''

RETURN = r'''
status:
  description: The migrations' state after the task (in check mode, before it).
  returned: success and, when it could be read, failure
  type: dict
  contains:
    table_exists:
      description: Whether C(_prisma_migrations) exists (it does not before the first C(migrate deploy)).
      type: bool
      sample: true
    applied:
      description: The applied migrations, in the order they were applied.
      type: list
      elements: dict
      sample: [{"name": "20261101000000_create_customers", "started_at": "2026-11-22T14:20:23.713000+00:00",
                "finished_at": "2026-11-22T14:20:23.721000+00:00", "duration": 0.008, "applied_steps_count": 1,
                "checksum": "d7f4ff25...", "checksum_matches": true, "in_folder": true}]
    pending:
      description: The migrations in the folder that are not applied (nor failed), in the order Prisma applies them.
      type: list
      elements: str
      sample: [20261103000000_add_order_status]
    failed:
      description: The failed migrations, with the database message from their logs.
      type: list
      elements: dict
      sample: [{"name": "20261104000000_backfill_orders", "started_at": "2026-11-22T14:21:19.535000+00:00",
                "database_message": "Foreign key constraint failed: orders_customer_id_fkey",
                "logs": "...", "applied_steps_count": 0}]
    rolled_back:
      description: Migrations whose rows are all rolled back (they are also pending when in the folder).
      type: list
      elements: str
      sample: []
    not_in_folder:
      description: Applied migrations missing from the migrations folder (the folder is older than the database).
      type: list
      elements: str
      sample: []
    modified:
      description: Applied migrations whose C(migration.sql) changed since they were applied (checksum differs).
      type: list
      elements: str
      sample: []
applied:
  description:
    - With O(state=deployed), the migrations applied by this task, with their durations (seconds, from
      C(finished_at - started_at)).
    - In check mode, the migrations that would be applied (no times).
  returned: state=deployed
  type: list
  elements: dict
  sample: [{"name": "20261103000000_add_order_status", "duration": 0.003,
            "started_at": "2026-11-22T14:20:23.727000+00:00", "finished_at": "2026-11-22T14:20:23.730000+00:00"}]
rolled_back:
  description: With O(state=rolled_back), the migrations rolled back (or, in check mode, that would be), newest first.
  returned: state=rolled_back
  type: list
  elements: dict
  sample: [{"name": "20261103000000_add_order_status", "down_script": "/srv/app/prisma/migrations/20261103000000_add_order_status/down.sql",
            "duration": 0.012}]
resolved:
  description: With O(state=resolved), what was recorded, or null when it already was.
  returned: state=resolved
  type: dict
  contains:
    migration:
      description: The migration resolved.
      type: str
      sample: 20261104000000_backfill_orders
    as:
      description: V(applied) or V(rolled_back).
      type: str
      sample: rolled_back
    method:
      description: V(cli) (C(prisma migrate resolve)), V(native) (the native engine), V(direct) (recorded in the
        table, see the notes), or V(check_mode).
      type: str
      sample: cli
error:
  description: On failure, what Prisma or the database reported.
  returned: failure
  type: dict
  contains:
    code:
      description: The Prisma error code (P3005, P3009, P3018...), when there is one.
      type: str
      sample: P3018
    migration:
      description: The migration concerned.
      type: str
      sample: 20261104000000_backfill_orders
    database_message:
      description: The database's error message.
      type: str
      sample: "Foreign key constraint failed: orders_customer_id_fkey"
    output:
      description: The last lines of the Prisma CLI's output, when it ran.
      type: str
      sample: "Error: P3009 ..."
    statements:
      description:
        - When a migration failed to apply (P3018), what stayed of its script. Prisma's JavaScript engine (a
          driver adapter) runs the statements one by one, each committed on its own; Prisma's native schema
          engine and O(engine=native) send the script as one query, one transaction. The failure message names
          the same statements.
      type: dict
      returned: when a migration failed to apply
      contains:
        execution:
          description: V(one_by_one) (each statement committed on its own) or V(one_transaction).
          type: str
          sample: one_by_one
        exact:
          description: Whether RV(error.statements.committed) is known for certain (see the notes).
          type: bool
          sample: true
        committed:
          description: The statements that were committed, in order.
          type: list
          elements: str
          sample: ['DELETE FROM "items" WHERE "id" <= 50']
        failed:
          description: The statement that failed, when known.
          type: str
          sample: 'INSERT INTO "items" ("id", "name") VALUES (51, ''dup'')'
        not_run:
          description: The statements after it, which never ran.
          type: list
          elements: str
          sample: ['CREATE INDEX "items_sku" ON "items" ("sku")']
engine:
  description: The engine that applied or resolved migrations (O(engine)).
  returned: always
  type: str
  sample: native
migrations_path:
  description: The migrations folder read.
  returned: always
  type: str
  sample: /srv/app/current/prisma/migrations
prisma_version:
  description: Version of the Prisma CLI package, from its C(package.json) (null when not found, not needed, or
    with O(engine=native)).
  returned: always
  type: str
  sample: 6.19.3
executed_commands:
  description: The Prisma commands run, in order (none with O(engine=native)). They never contain the database URL
    (it is in their environment).
  returned: always
  type: list
  elements: str
  sample: ["/usr/bin/timeout --kill-after=10 600 /usr/bin/node /srv/app/current/node_modules/.bin/prisma migrate deploy"]
'''

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.runbook.deploy.plugins.module_utils import postgres as pg
from ansible_collections.runbook.deploy.plugins.module_utils import down_migrations as down
from ansible_collections.runbook.deploy.plugins.module_utils import prisma
from ansible_collections.runbook.deploy.plugins.module_utils.prisma_native import PrismaNative
from ansible_collections.runbook.deploy.plugins.module_utils.command import CommandRunner


class PrismaMigrate(object):
    """One prisma_migrate task: read the state, then dispatch on O(state)."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.runner = CommandRunner(module)
        self.result = dict(changed=False, executed_commands=self.runner.executed, migrations_path=None,
                           prisma_version=None, engine=module.params['engine'])
        self.engine = None
        self.engine_checked = False

    def path(self, value):
        if value and not os.path.isabs(value):
            return os.path.join(self.params['project_path'], value)
        return value

    # -- set-up ----------------------------------------------------------------------------------
    def prepare(self):
        p = self.params
        project = p['project_path']
        if not os.path.isdir(project):
            raise prisma.PrismaError('project_path %s does not exist or is not a directory; point it at the Node.js '
                                     'project holding the Prisma schema' % project)
        state = p['state']
        for option, states in (('as', ('resolved',)), ('steps', ('rolled_back',)), ('migration', ('resolved', 'rolled_back'))):
            if p[option] is not None and state not in states:
                raise prisma.PrismaError('%s is only used with state=%s' % (option, ' or state='.join(states)))
        if p['down_scripts'] and state != 'rolled_back':
            raise prisma.PrismaError('down_scripts is only used with state=rolled_back')
        if p['engine'] == 'native':
            for option in ('executable', 'node_executable', 'config'):
                if p[option]:
                    raise prisma.PrismaError('%s is only used with engine=cli (the native engine runs no Prisma CLI)'
                                             % option)
        self.conn, prisma_only = prisma.connection_options(p)
        if p['db_schema']:
            prisma_only['schema'] = p['db_schema']
        self.db_schema = prisma_only.get('schema') or 'public'
        self.migrations_path = self.path(p['migrations_path']) or prisma.default_migrations_path(
            project, self.path(p['schema']))
        self.result['migrations_path'] = self.migrations_path
        # The engine that applies and resolves migrations (deploy, resolve_applied, resolve_rolled_back).
        if p['engine'] == 'native':
            self.engine = PrismaNative(self.conn, self.db_schema, self.migrations_path, timeout=p['timeout'] or None,
                                       allow_empty=p['allow_empty'])
        else:
            self.engine = prisma.PrismaCli(
                self.module, self.runner, project, executable=self.path(p['executable']),
                node_executable=p['node_executable'], schema=self.path(p['schema']), config=self.path(p['config']),
                url=prisma.build_url(self.conn, prisma_only), url_env=p['url_env'], timeout=p['timeout'] or None,
                secrets=[self.conn.get('password')])

    def ready_engine(self):
        if not self.engine_checked:
            self.engine.check()
            self.engine_checked = True
            self.result['prisma_version'] = self.engine.version
        return self.engine

    def read_status(self):
        self.local = prisma.local_migrations(self.migrations_path, allow_empty=self.params['allow_empty'])
        connection = pg.connect(self.conn)
        try:
            rows = prisma.read_rows(connection, self.db_schema)
        finally:
            connection.close()
        status = prisma.classify(self.local, rows)
        self.known = set(m['name'] for m in self.local) | set(r['migration_name'] for r in rows or [])
        self.result['status'] = status
        return status

    def warn_about_drift(self, status):
        if status['modified']:
            self.module.warn('migration.sql changed after it was applied (checksum differs) for: %s'
                             % ', '.join(status['modified']))
        if status['not_in_folder']:
            self.module.warn('applied migrations missing from %s (is this an older release?): %s'
                             % (self.migrations_path, ', '.join(status['not_in_folder'])))

    # -- states ----------------------------------------------------------------------------------
    def run(self):
        state = self.params['state']
        if state in ('deployed', 'resolved'):
            self.ready_engine()  # a missing CLI or Node is reported before anything else
        status = self.read_status()
        self.warn_about_drift(status)
        if self.params['require_down_scripts'] and state in ('status', 'deployed'):
            self.require_down_scripts(status)
        if state == 'deployed':
            self.deploy(status)
        elif state == 'resolved':
            self.resolve(status)
        elif state == 'rolled_back':
            self.roll_back(status)

    def require_down_scripts(self, status):
        """Every migration about to be applied has its down script (down_migrations.require_scripts)."""
        local = dict((m['name'], m) for m in self.local)
        scripts = [(name, [path for path in [(local.get(name) or {}).get('down_script')] if path])
                   for name in status['pending']]
        try:
            down.require_scripts(scripts, '%s beside each migration.sql' % prisma.DOWN_FILE)
        except down.DownMigrationError as exc:
            raise prisma.PrismaError(str(exc), migration=exc.migration)

    def refuse_failed(self, status, doing):
        failed = status['failed'][0]
        raise prisma.PrismaError(
            "P3009: migration '%s' is recorded as failed (%s), so %s; fix the database, then use state=resolved "
            'with as=rolled_back (after undoing its partial changes) or as=applied (after completing it)'
            % (failed['name'], failed['database_message'] or 'no message in its logs', doing),
            code='P3009', migration=failed['name'], database_message=failed['database_message'])

    def deploy(self, before):
        self.result['applied'] = []
        if before['failed']:
            self.refuse_failed(before, 'prisma migrate deploy would refuse to apply anything')
        if not before['pending']:
            return
        if self.module.check_mode:
            self.result['applied'] = [dict(name=n, duration=None, started_at=None, finished_at=None)
                                      for n in before['pending']]
            self.result['changed'] = True
            return
        was_applied = set(e['name'] for e in before['applied'])
        rc, output, dummy = self.engine.deploy()
        after = self.read_status()
        self.result['applied'] = [dict(name=e['name'], duration=e['duration'], started_at=e['started_at'],
                                       finished_at=e['finished_at'])
                                  for e in after['applied'] if e['name'] not in was_applied]
        failed = list(after['failed'])
        # Also when the table shows nothing new but Prisma says it applied some (another schema, see below).
        self.result['changed'] = bool(self.result['applied'] or failed or prisma.APPLIED_LINE in output)
        if failed:
            raise self.deploy_failure(failed[0], output)
        if rc != 0:
            raise self.engine.failure(self.engine.label, rc, output)
        if not any(line in output for line in prisma.SUCCESS_LINES):
            raise prisma.PrismaError(
                '%s exited 0 but its output does not say the migrations were applied (expected '
                "'%s'): %s" % (self.engine.label, prisma.SUCCESS_LINES[0],
                               prisma.tail(output, 8).replace('\n', ' / ') or 'no output'),
                output=prisma.tail(output))
        if after['pending']:
            raise prisma.PrismaError(
                '%s succeeded but %s still lists %d pending migration(s) (%s): Prisma read another '
                'migrations folder or database schema than this module; set schema, migrations_path or db_schema (a '
                'driver adapter in prisma.config.ts takes the schema from its own options, not from the URL)'
                % (self.engine.label, prisma.MIGRATIONS_TABLE, len(after['pending']), ', '.join(after['pending'][:5])),
                output=prisma.tail(output))

    def deploy_failure(self, failed, output):
        parsed = prisma.parse_cli_error(output)
        code = parsed['code'] or 'P3018'
        db_message = parsed['database_message'] or failed['database_message'] or 'no database message'
        done = [e['name'] for e in self.result['applied']]
        statements = self.failed_statements(failed, output)
        error = prisma.PrismaError(
            "%s failed: %s: migration '%s' failed to apply: %s. %s %s The database is left as Prisma "
            'left it: the migration is recorded as failed, and its committed statements stay applied. Fix the '
            'database, then use state=resolved with as=rolled_back (after undoing its partial changes) or as=applied '
            '(after completing it by hand).' % (
                self.engine.label, code, failed['name'], db_message,
                ('Applied before it: %s.' % ', '.join(done)) if done else 'Nothing was applied before it.',
                statements['summary'] if statements else ''),
            code=code, migration=failed['name'], database_message=db_message, output=prisma.tail(output))
        if statements:
            error.details['statements'] = dict((k, v) for k, v in statements.items() if k != 'summary')
        return error

    def failed_statements(self, failed, output):
        """Which statements of the failed migration were committed (prisma.failed_statements), or None when its
        script cannot be read."""
        path = os.path.join(self.migrations_path, failed['name'], prisma.MIGRATION_FILE)
        try:
            with open(path, 'rb') as handle:
                script = handle.read().decode('utf-8')
        except (IOError, OSError, UnicodeDecodeError):
            return None
        # The CLI with a driver adapter runs Prisma's JavaScript engine (statement by statement); without one, the
        # native schema engine (one query). The module's native engine always sends the script as one query.
        split = self.engine.name == 'cli' and any(
            marker in output or marker in (failed.get('logs') or '') for marker in prisma.JS_ENGINE_MARKERS)
        return prisma.failed_statements(script, split, self.engine.statement_log if split else None)

    def resolve(self, status):
        p = self.params
        name, outcome = p['migration'], p['as']
        if name not in self.known:
            raise prisma.PrismaError(prisma.unknown_migration(name, self.known), migration=name)
        applied = name in [e['name'] for e in status['applied']]
        failed = name in [f['name'] for f in status['failed']]
        self.result['resolved'] = None
        if outcome == 'applied':
            if applied and not failed:
                return
            if name not in [m['name'] for m in self.local]:
                raise prisma.PrismaError("P3017: migration '%s' is not in %s; prisma migrate resolve --applied needs "
                                         'its folder' % (name, self.migrations_path), code='P3017', migration=name)
        else:
            if not failed:
                if applied:
                    raise prisma.PrismaError(
                        "P3012: migration '%s' is applied, not failed: resolve only records the outcome of a failed "
                        'migration. To undo an applied migration run its down script with state=rolled_back'
                        % name, code='P3012', migration=name)
                if name in status['rolled_back']:
                    return
                raise prisma.PrismaError("P3011: migration '%s' cannot be rolled back because it was never applied "
                                         'to the database' % name, code='P3011', migration=name)
        self.result['changed'] = True
        if self.module.check_mode:
            self.result['resolved'] = dict(migration=name, **{'as': outcome, 'method': 'check_mode'})
            return
        if outcome == 'applied':
            method = self.engine.resolve_applied(name)
        else:
            method = self.engine.resolve_rolled_back(name)
            if method is None:
                self.module.warn('prisma migrate resolve --rolled-back needs the native schema engine, which this '
                                 "project does not have; recorded the migration as rolled back in %s directly "
                                 '(rolled_back_at on its failed rows), as Prisma does' % prisma.MIGRATIONS_TABLE)
                self.mark_rolled_back_directly(name)
                method = 'direct'
        self.result['resolved'] = dict(migration=name, method=method, **{'as': outcome})
        after = self.read_status()
        still_failed = name in [f['name'] for f in after['failed']]
        now_applied = name in [e['name'] for e in after['applied']]
        if still_failed or (outcome == 'applied') != now_applied:
            raise prisma.PrismaError("prisma migrate resolve reported success but migration '%s' is not recorded as %s "
                                     'in %s' % (name, outcome, prisma.MIGRATIONS_TABLE), migration=name)

    def mark_rolled_back_directly(self, name):
        connection = pg.connect(self.conn)
        try:
            with prisma.MigrationLock(connection, self.params['timeout']):
                if not prisma.mark_failed_rolled_back(connection, self.db_schema, name):
                    raise prisma.PrismaError("migration '%s' is no longer failed (changed while this task ran)" % name,
                                             migration=name)
        finally:
            connection.close()

    def plan_roll_back(self, status):
        """What to roll back, newest first, each {name, down_script, expected, sql}; refused before anything runs."""
        p = self.params
        if status['failed']:
            self.refuse_failed(status, 'nothing is rolled back while it is')
        targets = prisma.select_rollback(status, steps=p['steps'], migration=p['migration'], known=self.known)
        local = dict((m['name'], m) for m in self.local)
        plan = []
        for entry in targets:
            name = entry['name']
            given = self.path(p['down_scripts'].get(name))
            plan.append(dict(name=name, down_script=given or (local[name]['down_script'] if name in local else None),
                             expected=given or os.path.join(self.migrations_path, name, prisma.DOWN_FILE)))
        try:
            down.refuse_missing(plan, 'add a %s beside the migration.sql, or give its path in down_scripts'
                                % prisma.DOWN_FILE)
            for item in plan:
                item['sql'] = down.read_script(item['name'], item['down_script'])
        except down.DownMigrationError as exc:
            raise prisma.PrismaError(str(exc), migration=exc.migration)
        return plan

    def roll_back(self, status):
        p = self.params
        self.result['rolled_back'] = []
        for name in p['down_scripts']:
            if name not in self.known:
                raise prisma.PrismaError('down_scripts: ' + prisma.unknown_migration(name, self.known), migration=name)
        if p['migration'] is not None and p['migration'] not in self.known:
            raise prisma.PrismaError(prisma.unknown_migration(p['migration'], self.known), migration=p['migration'])
        plan = self.plan_roll_back(status)
        if not plan:
            return
        if self.module.check_mode:
            self.result['changed'] = True
            self.result['rolled_back'] = [dict(name=item['name'], down_script=item['down_script'], duration=None)
                                          for item in plan]
            return
        connection = pg.connect(self.conn)
        done = []
        try:
            # Chosen again under the lock: a migration run that held it may have applied or rolled back meanwhile.
            done = down.roll_back(
                prisma.MigrationLock(connection, p['timeout']), lambda: self.plan_roll_back(self.read_status()),
                lambda item: prisma.roll_back_one(connection, self.db_schema, item['name'], item['sql'],
                                                  source=item['down_script']))
        except Exception as exc:
            done = getattr(exc, 'rolled_back', [])
            raise
        finally:
            self.result['rolled_back'] = done
            self.result['changed'] = bool(done)
            connection.close()
            try:
                self.read_status()
            except Exception:  # pylint: disable=broad-except
                pass  # the error that got us here matters more


def main():
    argument_spec = pg.postgres_common_argument_spec()
    argument_spec.update(
        engine=dict(type='str', default='cli', choices=['cli', 'native']),
        state=dict(type='str', default='deployed', choices=['status', 'deployed', 'resolved', 'rolled_back']),
        project_path=dict(type='path', required=True),
        executable=dict(type='path'),
        node_executable=dict(type='path'),
        schema=dict(type='path'),
        config=dict(type='path'),
        migrations_path=dict(type='path'),
        allow_empty=dict(type='bool', default=False),
        url_env=dict(type='str', default='DATABASE_URL', no_log=False),
        db_schema=dict(type='str'),
        timeout=dict(type='int', default=600),
        migration=dict(type='str'),
        steps=dict(type='int'),
        down_scripts=dict(type='dict', default={}),
        require_down_scripts=dict(type='bool', default=False),
    )
    argument_spec['as'] = dict(type='str', choices=['applied', 'rolled_back'])
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[('state', 'resolved', ('migration', 'as')),
                     ('state', 'rolled_back', ('steps', 'migration'), True)],
        mutually_exclusive=[('steps', 'migration')],
    )
    if not pg.HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib('psycopg2'))
    job = PrismaMigrate(module)
    try:
        job.prepare()
        job.run()
    except prisma.PrismaError as exc:
        module.fail_json(msg=to_native(exc), error=exc.details, **job.result)
    except pg.PostgresError as exc:
        module.fail_json(msg=to_native(exc), **job.result)
    except pg.psycopg2.Error as exc:
        module.fail_json(msg='prisma_migrate: database error: %s' % prisma.pg_message(exc), **job.result)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='prisma_migrate failed unexpectedly: %s' % to_native(exc),
                         exception=traceback.format_exc(), **job.result)
    module.exit_json(**job.result)


if __name__ == '__main__':
    main()
