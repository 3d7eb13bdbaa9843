# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of runbook.deploy.check_settings (documented in plugins/modules/check_settings.py).

Runs on the controller: the settings live in the inventory, and the point is to judge them all before the first
task that changes anything, instead of one at a time when each role is finally included.
"""

from __future__ import annotations

import copy
import os

import yaml

from ansible.errors import AnsibleError, AnsibleUndefinedVariable
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import lookup_loader

from ansible_collections.runbook.deploy.plugins.module_utils.cron import job_problems
from ansible_collections.runbook.deploy.plugins.module_utils.hooks import hook_problems

ROLES = ('backend', 'backup', 'deployment', 'flags', 'frontend', 'migrate', 'notify', 'preflight', 'rollback', 'smoke',
         'watch')
COLLECTION_PREFIX = 'runbook.deploy.'
# The collection's root, from plugins/action/.
COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MASK = '********'
# The settings a release may carry in its own file (deploy/runbook.yml): those that belong to a version, not to an
# environment (what to check after the migrations and after the switch, which flags the version rolls out).
RELEASE_SETTINGS = {
    'smoke_checks': 'smoke',
    'migrate_verify_tables': 'migrate',
    'migrate_verify_columns': 'migrate',
    'migrate_verify_indexes': 'migrate',
    'migrate_verify_queries': 'migrate',
    'runbook_flag_rollouts': 'deploy playbook',
    'backend_cron_jobs': 'backend',
}
# Checks of a value beyond its type: a schedule crontab would refuse, two jobs of one name. Run once the argument
# specification found nothing wrong with that setting.
VALUE_CHECKS = {
    'backend_cron_jobs': job_problems,
    'deployment_hooks': hook_problems,
}
# runbook_flag_rollouts is read by playbooks/deploy.yml, not by a role: its spec is here.
PLAYBOOK_OPTIONS = {
    'runbook_flag_rollouts': dict(type='list', elements='dict', options=dict(
        name=dict(type='str', required=True),
        steps=dict(type='list', elements='int'),
    )),
}
# The settings every role shares, read by the roles' defaults: a misspelt key inside them would be ignored.
SHARED_OPTIONS = dict(PLAYBOOK_OPTIONS, **{
    'runbook_database': dict(type='raw', no_log=True),
    # The sign-offs a protected environment requires, by role (deployment role, tasks_from gate).
    'runbook_required_approvals': dict(type='list', elements='str'),
    'runbook_aws': dict(type='dict', options=dict(
        endpoint_url=dict(type='str'), region=dict(type='str'), profile=dict(type='str'), access_key=dict(type='str'),
        secret_key=dict(type='str', no_log=True), session_token=dict(type='str', no_log=True),
    )),
})


def role_options(loader, role):
    """The options of every entry point of a role, merged, without 'required' (the playbooks pass those) and
    without 'default' (only the values the host sets are judged; the defaults may be templates)."""
    specs = loader.load_from_file(os.path.join(COLLECTION, 'roles', role, 'meta', 'argument_specs.yml'))
    options = {}
    for entry_point in (specs.get('argument_specs') or {}).values():
        for name, spec in (entry_point.get('options') or {}).items():
            spec = copy.deepcopy(dict(spec))
            spec.pop('required', None)
            spec.pop('default', None)
            options.setdefault(name, spec)
    return options


def role_defaults(loader, role):
    path = os.path.join(COLLECTION, 'roles', role, 'defaults', 'main.yml')
    if not os.path.exists(path):
        return {}
    return loader.load_from_file(path, trusted_as_template=True) or {}


def value_problems(values, validated):
    """(name, problem) of VALUE_CHECKS for the values whose argument specification found nothing wrong."""
    found = []
    for name in sorted(set(values) & set(VALUE_CHECKS)):
        if any(name in str(error) for error in validated.errors):
            continue
        found.extend((name, problem) for problem in VALUE_CHECKS[name](values[name]))
    return found


def first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def masked(text, secrets):
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(('roles', 'allow', 'release_settings', 'release_settings_path'))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        dummy, args = self.validate_argument_spec(argument_spec=dict(
            roles=dict(type='list', elements='str', default=list(ROLES)),
            allow=dict(type='list', elements='str', default=[]),
            release_settings=dict(type='str'),
            release_settings_path=dict(type='str', default='the release settings file'),
        ))
        if args['release_settings'] is not None:
            return self.check_release_settings(result, args['release_settings'], args['release_settings_path'])
        roles = []
        for role in args['roles']:
            short = role[len(COLLECTION_PREFIX):] if role.startswith(COLLECTION_PREFIX) else role
            if short not in ROLES:
                raise AnsibleError("check_settings: '%s' is not one of this collection's roles (%s)"
                                   % (role, ', '.join(ROLES)))
            roles.append(short)

        problems = []
        unknown = lookup_loader.get('runbook.deploy.unknown_variables', loader=self._loader, templar=self._templar)
        for name in unknown.run([list(task_vars)], variables=task_vars, allow=args['allow']):
            problems.append('%s is named like a role variable, but no role or playbook reads it, so its value would '
                            'be ignored' % name)

        # Templates in the inventory may name any role's defaults (migrate_project_path naming backend_deploy_to):
        # they are visible underneath the host's own variables, as they will be when that role runs.
        defaults = {}
        options_of = {}
        for role in ROLES:
            defaults.update(role_defaults(self._loader, role))
        for role in roles:
            options_of[role] = role_options(self._loader, role)
        variables = dict(defaults)
        variables.update(task_vars)
        templar = self._templar.copy_with_new_env(available_variables=variables)

        secrets = set()
        checked = {}
        # Each role's options, then the settings every role shares, judged alike.
        groups = [(role, 'role %s' % role, options_of[role]) for role in roles]
        groups.append(('shared', 'shared settings', SHARED_OPTIONS))
        for key, label, options in groups:
            provided = {}
            for name in sorted(options):
                if name not in task_vars:
                    continue
                try:
                    provided[name] = templar.template(task_vars[name])
                except AnsibleUndefinedVariable as error:
                    # The message names the undefined variable, never the value.
                    problems.append('%s (%s) cannot be evaluated: %s' % (name, label, first_line(error)))
                except Exception as error:  # pylint: disable=broad-except
                    # Any failure to evaluate is the inventory's problem to fix, said with the variable's name; the
                    # message of a secret's could quote the template, so it is left out.
                    detail = ': %s' % first_line(error) if not options[name].get('no_log') else ''
                    problems.append('%s (%s) cannot be evaluated%s' % (name, label, detail))
            validated = ArgumentSpecValidator(options).validate(provided)
            secrets.update(str(value) for value in validated._no_log_values)
            problems.extend('%s: %s' % (label, first_line(error)) for error in validated.errors)
            problems.extend('%s (%s): %s' % (name, label, problem) for name, problem in value_problems(provided, validated))
            checked[key] = sorted(provided)

        problems = [masked(problem, secrets) for problem in problems]
        result.update(changed=False, problems=problems, checked=checked)
        if problems:
            result['failed'] = True
            result['msg'] = (
                '%d problem(s) in the settings of %s, found before anything changed: %s. Correct them (list variables '
                'of your own named like a role variable in deployment_extra_variables) and run again; nothing was '
                'changed.' % (len(problems), task_vars.get('inventory_hostname', 'this host'),
                              '; '.join('(%d) %s' % (number, problem) for number, problem in enumerate(problems, 1))))
        return result

    def check_release_settings(self, result, text, path):
        """Parse a release's settings file and judge it: a mapping, only RELEASE_SETTINGS, each valid for its role."""
        problems = []
        try:
            settings = yaml.safe_load(text)
        except yaml.YAMLError as error:
            settings = None
            problems.append('it is not valid YAML: %s' % ' '.join(str(error).split()))
        if settings is None and not problems:
            settings = {}
        if not problems and not isinstance(settings, dict):
            problems.append('it must be a mapping of settings, not a %s' % type(settings).__name__)
        if not problems:
            # A setting written without a value ('smoke_checks:') is not set: the inventory's applies.
            settings = dict((name, value) for name, value in settings.items() if value is not None)
        if not problems:
            for name in sorted(settings):
                if name not in RELEASE_SETTINGS:
                    problems.append('%s cannot be set by a release (it may set %s; environment settings belong in the '
                                    'inventory)' % (name, ', '.join(sorted(RELEASE_SETTINGS))))
            options = dict(PLAYBOOK_OPTIONS)
            for role in sorted(set(RELEASE_SETTINGS.values()) - {'deploy playbook'}):
                options.update((name, spec) for name, spec in role_options(self._loader, role).items()
                               if name in RELEASE_SETTINGS)
            release_values = dict((name, value) for name, value in settings.items() if name in RELEASE_SETTINGS)
            validated = ArgumentSpecValidator(options).validate(release_values)
            problems.extend(first_line(error) for error in validated.errors)
            problems.extend('%s: %s' % (name, problem) for name, problem in value_problems(release_values, validated))
        result.update(changed=False, problems=problems, release_settings=settings if not problems else {})
        if problems:
            result['failed'] = True
            result['msg'] = '%s: %d problem(s): %s. Correct the file in the release; no app and no database was changed.' % (
                path, len(problems), '; '.join('(%d) %s' % (number, problem)
                                               for number, problem in enumerate(problems, 1)))
        return result
