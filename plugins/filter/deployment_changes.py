# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
  name: deployment_changes
  version_added: 0.1.0
  short_description: What a deployment run changed, or in check mode would change, in figures that compare
  description:
    - Summarises the facts the deployment's roles publish into one dictionary, the same for a real run (what it
      changed) and a check run (what it predicts), so that a check run's prediction can be compared with the run
      that follows it. The deploy playbooks record it as C(changes) in the history entry and the report.
    - A check run predicts each step of a flag rollout from the flag's state before the run (nothing is written
      between the steps), so its steps do not chain; a flag's change is therefore summarised as its state before
      its first change and after its last one, in both kinds of run.
  positional: _input
  options:
    _input:
      description:
        - C(built), the hosts that built (or would build) the release; C(apps), each host's C(pm2_service) actions;
          C(backup), C(backup_taken) or C(backup_planned); C(migrate), C(migrate_result); C(frontend),
          C(frontend_result); C(flags_changed); C(rollouts), the names of the flags rolled out.
        - Any of them may be missing or null.
      type: dict
      required: true
  author:
    - runbook.deploy contributors (@runbook-deploy)
"""

EXAMPLES = r"""
changes: >-
  {{ {'built': ['app1'], 'apps': {'app1': backend_pm2_result.actions}, 'backup': backup_taken,
      'migrate': migrate_result, 'frontend': frontend_result, 'flags_changed': flags_changed,
      'rollouts': ['new_case_view']} | runbook.deploy.deployment_changes }}
# {'built': ['app1'], 'backup': {'db': 'app', 'reused': false, 's3': true},
#  'migrations': ['20261201000000_add_tags'], 'apps': {'app1': {'app-api': 'reload', 'app-worker': 'reload'}},
#  'frontend': {'uploaded': ['assets/app.3f2a.js', 'index.html'], 'deleted': ['assets/app.1b9e.js']},
#  'flags': {'new_case_view': {'before': {'enabled': false, 'rollout_percentage': 0},
#                              'after': {'enabled': true, 'rollout_percentage': 100}}}}
"""

RETURN = r"""
  _value:
    description:
      - C(built) (sorted host names), C(backup) (C(db), C(reused), C(s3); null when none), C(migrations) (names, in
        order), C(apps) (host to app to action, only the apps whose action is not C(none)), C(frontend) (sorted
        C(uploaded) and C(deleted) keys; null without a frontend), C(flags) (name to C(before) and C(after), each
        with C(exists), C(enabled) and C(rollout_percentage); only the flags whose state differs).
    type: dict
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError


def _state(flag):
    flag = flag if isinstance(flag, Mapping) else {}
    return {'exists': flag.get('exists', True) is not False, 'enabled': bool(flag.get('enabled')),
            'rollout_percentage': flag.get('rollout_percentage')}


def deployment_changes(facts):
    if not isinstance(facts, Mapping):
        raise AnsibleFilterError('deployment_changes expects a dictionary of the run\'s facts, got %s'
                                 % type(facts).__name__)
    backup = facts.get('backup')
    backup = ({'db': backup.get('db'), 'reused': bool(backup.get('reused')), 's3': bool(backup.get('s3_uri'))}
              if isinstance(backup, Mapping) and backup else None)
    migrate = facts.get('migrate') if isinstance(facts.get('migrate'), Mapping) else {}
    migrations = [m.get('name') if isinstance(m, Mapping) else m for m in migrate.get('applied') or []]
    apps = {}
    for host, actions in sorted((facts.get('apps') or {}).items()):
        moved = {app: action for app, action in sorted((actions or {}).items()) if action and action != 'none'}
        if moved:
            apps[host] = moved
    frontend = facts.get('frontend')
    frontend = ({'uploaded': sorted(frontend.get('uploaded_keys') or []), 'deleted': sorted(frontend.get('deleted_keys') or [])}
                if isinstance(frontend, Mapping) and frontend else None)
    rollouts = set(facts.get('rollouts') or [])
    flags = {}
    for change in facts.get('flags_changed') or []:
        if not isinstance(change, Mapping) or change.get('name') not in rollouts:
            continue
        entry = flags.setdefault(change['name'], {'before': _state(change.get('before'))})
        entry['after'] = _state(change.get('after'))
    flags = {name: entry for name, entry in sorted(flags.items()) if entry['before'] != entry['after']}
    return {'built': sorted(facts.get('built') or []), 'backup': backup, 'migrations': migrations, 'apps': apps,
            'frontend': frontend, 'flags': flags}


class FilterModule(object):
    def filters(self):
        return {'deployment_changes': deployment_changes}
