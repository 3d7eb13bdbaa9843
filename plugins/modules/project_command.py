#!/usr/bin/python
# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: project_command
short_description: Run one of the project's own commands (a build step, a hook) with an environment kept off every command line
version_added: 0.1.0
description:
  - Runs a command as C(ansible.builtin.command) does (no shell; O(cmd) is split like a shell would, or O(argv) is
    given word by word), in O(chdir), with variables added to its environment.
  - The variables never reach a command line. A task's C(environment:) keyword reaches the managed host as a prefix
    of the shell command that starts the module (C(NPM_TOKEN=... python AnsiballZ_command.py)), which C(ps) shows to
    every user of the host for as long as the command runs, over SSH as on the controller. Here they travel with the
    module's arguments and are put into the command's environment only.
  - O(secret_environment) is for credentials (C(NPM_TOKEN), C(SENTRY_AUTH_TOKEN)). Its values are left out of the
    task's result and replaced by C(********) wherever the command prints them.
  - Unlike C(ansible.builtin.command), C($VAR) and C(~) in the command are never expanded by the module (as with its
    O(ansible.builtin.command#module:expand_argument_vars=false)), since an expanded secret would be on the command
    line again. A tool reads its variables from its environment (npm's C(.npmrc) does, C(${NPM_TOKEN})), or the command
    runs C(/bin/sh -c), which expands them inside the shell.
  - Used by the roles for C(backend_build_commands), C(frontend_build_commands) and the deployment's hooks.
options:
  cmd:
    description: The command, split into words as a shell would (quotes group), without a shell running it.
    type: str
  argv:
    description: The command as a list of words; nothing is split or quoted.
    type: list
    elements: str
  chdir:
    description: The directory the command runs in.
    type: path
  environment:
    description:
      - Variables added to the command's environment (names of letters, digits and C(_)). Not secret - they appear in
        the task's C(invocation) - but, like O(secret_environment), never on a command line.
    type: dict
    default: {}
  secret_environment:
    description:
      - Variables added to the command's environment that carry credentials. They win over O(environment).
      - Their values are not returned (the invocation says C(VALUE_SPECIFIED_IN_NO_LOG_PARAMETER)) and are replaced by
        C(********) in the command's output (Ansible's C(no_log) treatment of an option), so a common value such as
        C(production) is masked in the output too.
      - A value shorter than 6 characters is not masked in the output (it is still never returned) - no credential is
        that short, and a flag such as C(CI=1) would otherwise turn every C(1) of the output into C(********).
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
    description: In check mode nothing runs (the project's code is the app's); the result says C(skipped), as C(ansible.builtin.command)'s does.
  diff_mode:
    support: none
    description: What a command changes is the command's to say.
  platform:
    support: full
    platforms: posix
    description: Runs the command on the managed host.
notes:
  - The command inherits the environment the module runs with (as with C(ansible.builtin.command)), plus these variables.
  - Returns C(changed=true) whenever the command ran.
seealso:
  - module: ansible.builtin.command
author:
  - runbook.deploy contributors (@runbook-deploy)
"""

EXAMPLES = r"""
- name: Build the release with the private registry's token (ps shows npm ci, never the token)
  runbook.deploy.project_command:
    cmd: npm ci --no-audit --no-fund
    chdir: /srv/app/releases/v4.0.0
    environment:
      NODE_ENV: production
    secret_environment:
      NPM_TOKEN: "{{ vault_npm_token }}"

- name: Run a smoke-test script through a shell that expands the variables itself
  runbook.deploy.project_command:
    argv: [timeout, "600", /bin/sh, -c, 'npx tsx scripts/smoke-test-staging.ts --base "$API_URL"']
    chdir: /srv/app/current
    environment:
      API_URL: https://staging.example.com
"""

RETURN = r"""
cmd:
  description: The command as it ran, word by word (never the environment).
  returned: always
  type: list
  elements: str
  sample: [npm, ci, --no-audit, --no-fund]
rc:
  description: The command's exit code (negative when a signal killed it); V(0) in check mode.
  returned: always
  type: int
  sample: 0
stdout:
  description: What the command printed, secrets masked.
  returned: always
  type: str
  sample: added 212 packages in 3s
stderr:
  description: What the command printed on standard error, secrets masked.
  returned: always
  type: str
  sample: ''
start:
  description: When the command started.
  returned: when it ran
  type: str
  sample: '2026-12-07 18:30:01.112233'
end:
  description: When the command ended.
  returned: when it ran
  type: str
  sample: '2026-12-07 18:30:04.445566'
delta:
  description: How long it ran (C(H:MM:SS.ffffff)).
  returned: when it ran
  type: str
  sample: '0:00:03.333333'
msg:
  description: C(non-zero return code) when it failed, what check mode would have done, or empty.
  returned: always
  type: str
  sample: ''
"""

import datetime
import os
import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.runbook.deploy.plugins.module_utils.command import ENVIRONMENT_NAME, replaced_environ

# Ansible masks a no_log value wherever it appears in a result: a value as short as CI=1 would mask every 1 of the
# output (v1.0.1 -> v********.0.********). No credential is this short.
MASKED_MIN_LENGTH = 6
CENSORED = 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cmd=dict(type='str'),
            argv=dict(type='list', elements='str'),
            chdir=dict(type='path'),
            environment=dict(type='dict', default={}),
            secret_environment=dict(type='dict', default={}, no_log=True),
        ),
        mutually_exclusive=[('cmd', 'argv')],
        required_one_of=[('cmd', 'argv')],
        supports_check_mode=True,
    )
    params = module.params
    secrets = params['secret_environment'] or {}
    module.no_log_values.difference_update(
        str(value) for value in secrets.values() if value is not None and len(str(value)) < MASKED_MIN_LENGTH)
    # Given explicitly, the invocation never shows a secret value, the short ones no longer masked included.
    invocation = dict(module_args=dict(params, secret_environment=dict((name, CENSORED) for name in secrets)))
    added = {}
    for option in ('environment', 'secret_environment'):
        for name, value in (params[option] or {}).items():
            if not ENVIRONMENT_NAME.match(str(name)):
                module.fail_json(msg='%s: %r is not a variable name (letters, digits and _, not first a digit)'
                                 % (option, name), invocation=invocation)
            added[str(name)] = '' if value is None else str(value)

    try:
        argv = shlex.split(params['cmd']) if params['cmd'] is not None else list(params['argv'])
    except ValueError as exc:
        module.fail_json(msg='cmd cannot be split into words (%s): %s' % (exc, params['cmd']), invocation=invocation)
    if not argv or not argv[0]:
        module.fail_json(msg='the command is empty', invocation=invocation)
    result = dict(changed=False, cmd=argv, rc=0, stdout='', stderr='', msg='', invocation=invocation)

    chdir = params['chdir']
    if chdir and not os.path.isdir(chdir):
        result.update(rc=None, msg='chdir %s is not a directory on this host' % chdir)
        module.fail_json(**result)

    if module.check_mode:
        result.update(skipped=True, msg='Command would have run if not in check mode')
        module.exit_json(**result)

    start = datetime.datetime.now()
    # run_command starts the child with a copy of os.environ: swapping it for the module's environment plus the
    # variables gives them to the child (and to no command line); expand_user_and_vars=False keeps $VAR literal.
    with replaced_environ(dict(os.environ, **added)):
        rc, out, err = module.run_command(argv, cwd=chdir, expand_user_and_vars=False)
    end = datetime.datetime.now()
    result.update(changed=True, rc=rc, stdout=out.rstrip('\r\n'), stderr=err.rstrip('\r\n'), start=str(start),
                  end=str(end), delta=str(end - start))
    if rc != 0:
        result['msg'] = 'non-zero return code'
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
