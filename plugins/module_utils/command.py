# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running external tools from runbook.deploy modules.

``CommandRunner`` wraps ``AnsibleModule.run_command``: list argv only (no shell), a minimal environment
per call (``child_environment``), and a record of every command for the ``executed_commands`` return
value.  Secrets never reach argv, so the record is safe to return; ``mask`` still hides any value the
caller names.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading

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


# What a child may take from the module's own environment.  The module runs with the controller's
# environment (the task's `environment:`, AWS keys, tokens, DATABASE_URL...), and a child such as the PM2
# daemon outlives the run and hands its environment to every app it starts: so children get an allow-list,
# plus what the caller passes on purpose.  Kept: where to find tools and write files (PATH, HOME, TMPDIR,
# XDG_* dirs: the test set-up and some hosts move tool caches there), who runs (USER, LOGNAME, SHELL), how to
# read and print text and time (LANG, LANGUAGE, LC_*, TZ), how Node resolves modules and trusts CAs
# (NODE_PATH: the migrate role hands Prisma its node_modules so; NODE_OPTIONS; NODE_EXTRA_CA_CERTS), where
# Java is (JAVA_HOME, which Flyway needs), and which CA bundle OpenSSL reads (SSL_CERT_FILE, SSL_CERT_DIR).
# Left out on purpose: TERM (no child has a terminal, and colour codes only get in the way of parsing),
# proxies (their URLs can carry credentials; no child here needs the network beyond the database),
# PYTHONPATH, ANSIBLE_*, PM2_* (pm2_service passes PM2_HOME itself), FLYWAY_* and every credential.
INHERITED = frozenset((
    'PATH', 'HOME', 'TMPDIR', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LANGUAGE', 'TZ',
    'XDG_CACHE_HOME', 'XDG_CONFIG_HOME', 'XDG_DATA_HOME', 'XDG_RUNTIME_DIR',
    'NODE_PATH', 'NODE_OPTIONS', 'NODE_EXTRA_CA_CERTS', 'JAVA_HOME', 'SSL_CERT_FILE', 'SSL_CERT_DIR',
))
INHERITED_PREFIXES = ('LC_',)
# Never inherited, even if a name above (or one a caller asks for with ``inherit``) matched: belt and braces
# for names that carry credentials.  Callers still pass their own secrets explicitly in ``extra``.
SECRET_NAME = re.compile(r'^AWS_|PASSWORD|PASSWD|PASSFILE|TOKEN|SECRET|CREDENTIAL|PRIVATE|_KEY$|_KEY_|APIKEY|'
                         r'_AUTH|^AUTH|COOKIE|SESSION|DATABASE_URL|_DSN$|^PGSERVICE', re.IGNORECASE)

# How a child process's environment variable may be named (letters, digits and _, not first a digit).
ENVIRONMENT_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')

_ENVIRON_LOCK = threading.Lock()


def is_secret_name(name):
    """Whether an environment variable's name says it carries a credential (AWS_*, *_PASSWORD, *_TOKEN...)."""
    return bool(SECRET_NAME.search(name))


def child_environment(extra=None, inherit=(), environ=None):
    """The whole environment for a child process: the allow-list above, taken from the module's own environment
    (or ``environ``), plus the names in ``inherit`` (exact names, or prefixes ending in ``*``) unless they look
    secret, plus ``extra`` (the caller's own variables, secrets it means to pass included), which wins."""
    source = os.environ if environ is None else environ
    names = [n for n in inherit if not n.endswith('*')]
    prefixes = INHERITED_PREFIXES + tuple(n[:-1] for n in inherit if n.endswith('*'))
    env = {}
    for name, value in source.items():
        if (name in INHERITED or name in names or name.startswith(prefixes)) and not is_secret_name(name):
            env[name] = value
    for name, value in (extra or {}).items():
        if value is not None:
            env[name] = str(value)
    return env


@contextlib.contextmanager
def replaced_environ(env):
    """Make ``os.environ`` read as env (a plain dict) while the block runs.

    ``AnsibleModule.run_command`` starts every child with a copy of ``os.environ`` updated by
    ``environ_update``: it can add variables but not remove any.  Rebinding the name (rather than clearing
    and refilling the mapping) leaves the process's real environment alone, so nothing is lost if the block
    is interrupted; the lock keeps two threads from swapping at once.
    """
    with _ENVIRON_LOCK:
        saved = os.environ
        os.environ = dict(env)
        try:
            yield
        finally:
            os.environ = saved


class CommandRunner(object):
    """Run tools for a module; every child gets ``child_environment(env, inherit)``, never the module's environment."""

    def __init__(self, module, mask=(), inherit=()):
        self.module = module
        self.mask = [m for m in mask if m]
        self.inherit = tuple(inherit)
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
        with replaced_environ(child_environment(env, self.inherit)):
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
