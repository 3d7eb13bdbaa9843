# Copyright: (c) 2026, runbook.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The project's own scripts at the deployment's phase boundaries (the deployment role's deployment_hooks).

Used on the controller by the hook_commands filter (what tasks_from: hooks runs) and by check_settings (so that a
misspelt hook point or a command without text is found in the Check phase, not when the phase is reached).
"""

from __future__ import annotations

from ansible_collections.runbook.deploy.plugins.module_utils.command import ENVIRONMENT_NAME

PHASES = ('build', 'database', 'backends', 'release', 'rollback')
HOOK_POINTS = tuple('%s_%s' % (when, phase) for phase in PHASES for when in ('before', 'after'))
COMMAND_KEYS = ('name', 'command', 'timeout', 'hosts', 'environment')
DEFAULT_TIMEOUT = 600


def hook_problems(hooks):
    """One sentence per problem of deployment_hooks ({hook point: [command, ...]}); empty when there is none."""
    if hooks is None:
        return []
    if not isinstance(hooks, dict):
        return ['must be a mapping of hook point (%s) to a list of commands, not %s'
                % (', '.join(HOOK_POINTS), type(hooks).__name__)]
    problems = []
    for point in sorted(hooks, key=str):
        commands = hooks[point]
        if point not in HOOK_POINTS:
            problems.append('%s is not a hook point (%s)' % (point, ', '.join(HOOK_POINTS)))
            continue
        if commands is None:
            continue
        if not isinstance(commands, list):
            problems.append('%s must be a list of commands, not %s' % (point, type(commands).__name__))
            continue
        for index, entry in enumerate(commands):
            label = '%s[%d]' % (point, index)
            if isinstance(entry, str):
                if not entry.strip():
                    problems.append('%s: the command is empty' % label)
                continue
            if not isinstance(entry, dict):
                problems.append('%s: a command is text or a mapping of %s' % (label, ', '.join(COMMAND_KEYS)))
                continue
            unknown = sorted(set(entry) - set(COMMAND_KEYS), key=str)
            if unknown:
                problems.append('%s: unknown key %s (a command has %s)'
                                % (label, ', '.join(map(str, unknown)), ', '.join(COMMAND_KEYS)))
            if not isinstance(entry.get('command'), str) or not entry['command'].strip():
                problems.append('%s: command is empty' % label)
            timeout = entry.get('timeout', DEFAULT_TIMEOUT)
            if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
                problems.append('%s: timeout must be a number of seconds, 1 or more, not %r' % (label, timeout))
            if entry.get('hosts', 'one') not in ('one', 'all'):
                problems.append('%s: hosts must be one (the first host) or all, not %r' % (label, entry.get('hosts')))
            environment = entry.get('environment', {})
            if not isinstance(environment, dict) or not all(isinstance(key, str) and ENVIRONMENT_NAME.match(key)
                                                            for key in environment):
                problems.append('%s: environment must be a mapping of variable names to values' % label)
    return problems


def hook_commands(hooks, point, default_timeout=DEFAULT_TIMEOUT):
    """The commands of one hook point, each as {name, command, timeout, hosts, environment} (a text is the command,
    named after itself)."""
    commands = []
    for entry in (hooks or {}).get(point) or []:
        if isinstance(entry, str):
            entry = {'command': entry}
        command = entry['command'].strip()
        commands.append(dict(name=entry.get('name') or command, command=command,
                             timeout=int(entry.get('timeout', default_timeout)), hosts=entry.get('hosts', 'one'),
                             environment=dict((key, str(value)) for key, value in (entry.get('environment') or {}).items())))
    return commands
