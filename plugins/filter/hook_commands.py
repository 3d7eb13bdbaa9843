# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
  name: hook_commands
  version_added: 0.1.0
  short_description: The commands of one hook point of deployment_hooks, each with its name, timeout and hosts
  description:
    - Reads the deployment role's C(deployment_hooks) (a mapping of hook point, C(before_build) to C(after_rollback),
      to a list of commands) and returns the commands of one hook point, in order.
    - A command given as text becomes C({name, command}) named after itself; a mapping may set C(name),
      C(timeout) (seconds, default O(timeout)), C(hosts) (C(one), the play's first host, the default, or C(all)) and
      C(environment) (variables added to the command's environment; values become text).
    - The value must have been checked (C(runbook.deploy.check_settings) does it in the Check phase).
  positional: _input, point
  options:
    _input:
      description: C(deployment_hooks).
      type: dict
      required: true
    point:
      description: The hook point, such as V(after_database).
      type: str
      required: true
    timeout:
      description: The timeout of a command that names none.
      type: int
      default: 600
  author:
    - runbook.deploy contributors (@runbook-deploy)
"""

EXAMPLES = r"""
# deployment_hooks:
#   after_database: [npm run validate:data-integrity]
#   after_release:
#     - {name: critical paths, command: npm run test:critical, timeout: 900, environment: {BASE_URL: "https://..."}}
commands: "{{ deployment_hooks | runbook.deploy.hook_commands('after_release') }}"
# [{'name': 'critical paths', 'command': 'npm run test:critical', 'timeout': 900, 'hosts': 'one',
#   'environment': {'BASE_URL': 'https://...'}}]
"""

RETURN = r"""
  _value:
    description: The commands, each C({name, command, timeout, hosts, environment}).
    type: list
    elements: dict
"""

from ansible_collections.runbook.deploy.plugins.module_utils.hooks import DEFAULT_TIMEOUT, hook_commands as _commands


def hook_commands(hooks, point, timeout=DEFAULT_TIMEOUT):
    return _commands(hooks, point, timeout)


class FilterModule(object):
    def filters(self):
        return {'hook_commands': hook_commands}
