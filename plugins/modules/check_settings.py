#!/usr/bin/python
# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: check_settings
short_description: Check every setting a deployment will use, before anything changes, and report all problems at once
version_added: 0.1.0
description:
  - Runs on the controller (an action plugin) and reads nothing from the managed host.
  - For each role named in O(roles), evaluates every variable of the host that is one of the role's options (from
    the inventory, group and host vars, extra vars and facts set so far; other roles' defaults are visible to the
    templates) and validates it against the role's argument specification (type, element type, choices, nested
    options), as Ansible would when the role is included later in the run.
  - Also lists the variables named like one of the collection's role variables that no role or playbook reads (the
    C(runbook.deploy.unknown_variables) lookup), each with the closest
    known name.
  - Fails once, listing every problem with the variable's name, the role and what to do, so that a typo in the
    inventory is found in the Check phase, not after the build and the backup (a misspelt C(migrate_tool) used
    to be found when the migrations were due).
  - A variable whose value cannot be evaluated (it names an undefined variable, a vault secret cannot be
    decrypted) is a problem too. Values of options marked C(no_log) never appear in messages or results.
  - Beyond its type, C(backend_cron_jobs) is checked job by job (the name, the five crontab fields of the
    schedule and their bounds, an empty command, two jobs of one name), in the inventory and in a release's settings,
    and C(deployment_hooks) hook point by hook point (a misspelt hook point or key, an empty command, a bad timeout).
  - Required options are not checked here (the collection's playbooks pass them when they include a role).
options:
  roles:
    description:
      - The collection's roles whose settings the run will use (short names, V(backend), or FQCNs).
      - The options of all the role's entry points are checked.
    type: list
    elements: str
    default: [backend, backup, deployment, flags, frontend, migrate, notify, preflight, rollback, smoke, watch]
  allow:
    description: Variables of your own named like a role's, which are not reported as unknown.
    type: list
    elements: str
    default: []
  release_settings:
    description:
      - The text of a release's own settings file (C(deploy/runbook.yml) in the release, read by the backend role's
        C(tasks_from=release_settings)). When set, only this file is judged, not the host's variables.
      - It must be a YAML mapping of settings that belong to a version rather than to an environment, each valid
        for its role - C(smoke_checks), C(migrate_verify_tables), C(migrate_verify_columns),
        C(migrate_verify_indexes), C(migrate_verify_queries), C(runbook_flag_rollouts) (a list of
        C({name, steps})) and C(backend_cron_jobs) (the version's cron jobs).
      - Values are data, never templates (the file comes from the app's repository).
    type: str
  release_settings_path:
    description: Where the release settings came from, for messages.
    type: str
    default: the release settings file
attributes:
  check_mode:
    support: full
    description: It reads the inventory and changes nothing, in any mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to show.
  action:
    support: full
    description: Runs on the controller as an action plugin.
  platform:
    support: full
    platforms: all
    description: Reads only the inventory and the collection's roles.
author:
  - runbook.deploy contributors (@runbook-deploy)
"""

EXAMPLES = r"""
- name: Check every role's settings before anything changes
  runbook.deploy.check_settings:
    roles: [preflight, backend, backup, migrate, smoke, rollback]
    allow: [backup_window_owner]
"""

RETURN = r"""
problems:
  description: One sentence per problem found (empty when there is none).
  returned: always
  type: list
  elements: str
  sample: ["migrate_tool (role migrate): value of migrate_tool must be one of: prisma, flyway, got: prisam"]
release_settings:
  description: The release's settings, parsed and judged (C({}) when there is a problem).
  returned: when O(release_settings) is set
  type: dict
  sample: {smoke_checks: [{name: health, path: /health}]}
checked:
  description:
    - For each role checked, the names of the settings that were evaluated and validated.
    - Under C(shared), those every role shares that were given (C(runbook_database), C(runbook_aws),
      C(runbook_flag_rollouts), C(runbook_required_approvals)); a misspelt key inside C(runbook_aws) is a problem.
  returned: when O(release_settings) is not set
  type: dict
  sample: {migrate: [migrate_tool, migrate_project_path], shared: [runbook_aws, runbook_database]}
"""
