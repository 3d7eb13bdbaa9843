# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running external tools from runbook.deploy modules.

``CommandRunner`` wraps ``AnsibleModule.run_command``: list argv only (no shell), a fixed environment
update per call, and a record of every command for the ``executed_commands`` return value.  Secrets
never reach argv, so the record is safe to return; ``mask`` still hides any value the caller names.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

try:
    from shlex import quote as shlex_quote
except ImportError:  # pragma: no cover
    from pipes import quote as shlex_quote


class CommandError(Exception):
    """A command failed; the message is ready for fail_json."""

    def __init__(self, message, rc=None, stderr=''):
        super(CommandError, self).__init__(message)
        self.rc = rc
        self.stderr = stderr


class CommandRunner(object):
    def __init__(self, module, mask=()):
        self.module = module
        self.mask = [m for m in mask if m]
        self.executed = []

    def render(self, argv):
        text = ' '.join(shlex_quote(str(a)) for a in argv)
        for secret in self.mask:
            text = text.replace(secret, '********')
        return text

    def record(self, argv):
        self.executed.append(self.render(argv))

    def run(self, argv, env=None, check_rc=False, step=None, data=None, cwd=None):
        """Run argv (in cwd); return (rc, stdout, stderr).  With check_rc, raise CommandError naming step."""
        self.record(argv)
        rc, out, err = self.module.run_command([str(a) for a in argv], environ_update=env or {}, data=data,
                                               binary_data=data is not None, check_rc=False, cwd=cwd,
                                               expand_user_and_vars=False)
        if check_rc and rc != 0:
            raise CommandError('%s failed (%s): %s' % (step or os.path.basename(str(argv[0])), describe_rc(rc),
                                                       last_lines(err or out)), rc=rc, stderr=err)
        return rc, out, err


def describe_rc(rc):
    if rc is not None and rc < 0:
        return 'killed by signal %d' % -rc
    return 'exit code %s' % rc


def last_lines(text, count=8):
    lines = [line for line in (text or '').strip().splitlines() if line.strip()]
    return ' / '.join(lines[-count:]) if lines else 'no output'


def find_tool(name, bin_dir=None):
    """Absolute path of a tool from bin_dir or PATH, or None."""
    if bin_dir:
        candidate = os.path.join(bin_dir, name)
        return candidate if os.access(candidate, os.X_OK) else None
    return shutil.which(name)


def tool_major_version(runner, path):
    """Major version of a PostgreSQL client tool from its --version output (e.g. 15), or None."""
    rc, out, dummy = runner.run([path, '--version'])
    match = re.search(r'\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?', out or '')
    if rc != 0 or not match:
        return None
    return int(match.group(1))


class PrivateWorkspace(object):
    """A 0700 temporary directory for passfiles and scratch files, removed on exit."""

    def __init__(self, prefix='runbook-deploy-'):
        self.path = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.path, 0o700)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        return False
