"""Fetch a large real-world Prisma migration history for the prisma_migrate native-engine tests and benchmark.

The history is LiteLLM's proxy database (PostgreSQL, MIT licence): the ``litellm-proxy-extras`` wheel on PyPI
carries its ``schema.prisma`` and ``migrations/`` folder (220 migrations in 0.4.110, 19 of them with dollar-quoted
blocks: ``DO $$ ... $$`` and function bodies).  It is downloaded from the package registry (never committed
here), checked against a pinned sha256, and unpacked to ``.cache/prisma-history/litellm-0.4.110/`` as a Prisma
project the CLI can read offline: the migrations, a datasource-only ``prisma/schema.prisma`` and the test
project's ``prisma.config.ts`` (the JS engine with the pg adapter).

Idempotent and quick when already there.  Prints the project's path.

    .venv/bin/python tests/scripts/prisma_history.py
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = 'litellm-proxy-extras'
VERSION = '0.4.110'
WHEEL = 'litellm_proxy_extras-%s-py3-none-any.whl' % VERSION
SHA256 = '2a488653b7e5eb97e7a2c84fb67818dfbdbd1d799cd61832f1b5d151c229e907'
MIGRATIONS_IN_WHEEL = 'litellm_proxy_extras/migrations/'
CACHE = os.path.join(REPO, '.cache', 'prisma-history')
PROJECT = os.path.join(CACHE, 'litellm-%s' % VERSION)
SCHEMA = '''// Datasource only: enough for `prisma migrate status|deploy` on LiteLLM's migrations (runbook.deploy tests).
generator client {
  provider   = "prisma-client-js"
  engineType = "client"
}

datasource db {
  provider = "postgresql"
  url      = env("DATABASE_URL")
}
'''


def sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def download():
    wheel = os.path.join(CACHE, WHEEL)
    if os.path.isfile(wheel) and sha256(wheel) == SHA256:
        return wheel
    os.makedirs(CACHE, exist_ok=True)
    pip = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--disable-pip-version-check',
           '-q', '-d', CACHE, '%s==%s' % (PACKAGE, VERSION)]
    done = subprocess.run(pip, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not os.path.isfile(wheel):
        sys.exit('prisma_history: could not download %s==%s from the package index: %s'
                 % (PACKAGE, VERSION, (done.stderr or done.stdout).strip()[-800:]))
    if sha256(wheel) != SHA256:
        os.unlink(wheel)
        sys.exit('prisma_history: %s does not have the pinned sha256 %s; refusing to use it' % (WHEEL, SHA256))
    return wheel


def unpack(wheel):
    marker = os.path.join(PROJECT, '.complete')
    if os.path.isfile(marker):
        return PROJECT
    staging = tempfile.mkdtemp(prefix='.litellm-', dir=CACHE)
    migrations = os.path.join(staging, 'prisma', 'migrations')
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if not name.startswith(MIGRATIONS_IN_WHEEL) or name.endswith('/'):
                continue
            target = os.path.join(migrations, name[len(MIGRATIONS_IN_WHEEL):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(name) as source, open(target, 'wb') as dest:
                shutil.copyfileobj(source, dest)
    with open(os.path.join(staging, 'prisma', 'schema.prisma'), 'w') as handle:
        handle.write(SCHEMA)
    shutil.copy(os.path.join(REPO, 'tests', 'fixtures', 'prisma', 'app', 'prisma.config.ts'), staging)
    with open(os.path.join(staging, '.complete'), 'w') as handle:
        handle.write('%s %s\n' % (WHEEL, SHA256))
    if os.path.isdir(PROJECT):
        shutil.rmtree(PROJECT)
    os.rename(staging, PROJECT)
    return PROJECT


def project():
    """The history's project folder, fetched and unpacked when needed."""
    return unpack(download())


def migration_names(project_dir):
    """The migrations of a Prisma project, in Prisma's order."""
    folder = os.path.join(project_dir, 'prisma', 'migrations')
    return sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n, 'migration.sql')))


def dollar_quoted(project_dir, name):
    """Whether a migration's script has a dollar-quoted block ($$ or $tag$)."""
    with open(os.path.join(project_dir, 'prisma', 'migrations', name, 'migration.sql'), 'rb') as handle:
        return re.search(rb'\$[A-Za-z_]*\$', handle.read()) is not None


def copy_project(source, target, keep=None):
    """A copy of a Prisma project with the repository's node_modules linked; keep=N keeps the first N migrations."""
    shutil.copytree(source, target)
    os.symlink(os.path.join(REPO, 'node_modules'), os.path.join(target, 'node_modules'))
    if keep is not None:
        folder = os.path.join(target, 'prisma', 'migrations')
        for name in migration_names(target)[keep:]:
            shutil.rmtree(os.path.join(folder, name))
    return target


def main():
    print(project())


if __name__ == '__main__':
    main()
