"""Make the repository's Prisma 6.19.3 CLI work offline for the prisma_migrate tests.

The test project (tests/fixtures/prisma/app) runs Prisma's JS schema engine through the pg driver adapter
(`engine: "js"` in prisma.config.ts), because the native schema engine would have to be downloaded.  That path
has an upstream bug, prisma/orm#27403: @prisma/adapter-pg does not map the PostgreSQL type `name` (oid 19) to a
column type, and `prisma migrate deploy` then fails with "Column type 'name' could not be deserialized" (its own
queries read `current_schema()`, which is of type `name`).  This script adds `case 19:` to the adapter's text
types in node_modules/@prisma/adapter-pg/dist/index.js and index.mjs.

Idempotent: a patched file carries a marker comment and is left alone.  Run it after `npm ci` (bootstrap.sh):

    .venv/bin/python tests/scripts/prisma_setup.py [--check] [--node-modules DIR]

--check only reports (exit 1 when a file still needs the patch).  Exit 2 when the adapter's code no longer has
the expected shape (another version): then check whether the upstream fix landed and drop this script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = 'runbook.deploy patch: prisma/orm#27403'
ANCHOR = '    case ScalarColumnType.BPCHAR:\n'
PATCH = '    case 19: // %s: PostgreSQL `name` (oid 19) is text\n' % MARKER
FILES = ('dist/index.js', 'dist/index.mjs')
EXPECTED_VERSION = '6.19.3'


def patch_text(text):
    """Return (new text, state) where state is 'patched', 'already' or 'unknown'."""
    if MARKER in text:
        return text, 'already'
    if text.count(ANCHOR) != 1:
        return text, 'unknown'
    return text.replace(ANCHOR, PATCH + ANCHOR), 'patched'


def write_atomically(path, text):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix='.prisma-setup.', dir=directory)
    try:
        with os.fdopen(fd, 'w') as handle:
            handle.write(text)
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    parser.add_argument('--node-modules', default=os.path.join(REPO, 'node_modules'))
    parser.add_argument('--check', action='store_true', help='report only; exit 1 if a file needs the patch')
    args = parser.parse_args(argv)
    adapter = os.path.join(args.node_modules, '@prisma', 'adapter-pg')
    if not os.path.isdir(adapter):
        print('prisma_setup: %s is missing; run tests/scripts/bootstrap.sh (npm ci) first' % adapter, file=sys.stderr)
        return 2
    with open(os.path.join(adapter, 'package.json')) as handle:
        version = json.load(handle).get('version')
    if version != EXPECTED_VERSION:
        print('prisma_setup: warning: @prisma/adapter-pg is %s, the patch was written for %s'
              % (version, EXPECTED_VERSION), file=sys.stderr)
    needed = False
    for name in FILES:
        path = os.path.join(adapter, name)
        with open(path) as handle:
            text = handle.read()
        new_text, state = patch_text(text)
        if state == 'unknown':
            print('prisma_setup: %s does not have the expected code (%r); is prisma/orm#27403 fixed in %s?'
                  % (path, ANCHOR.strip(), version), file=sys.stderr)
            return 2
        if state == 'patched':
            needed = True
            if not args.check:
                write_atomically(path, new_text)
        print('prisma_setup: %s: %s' % (name, {'already': 'already patched',
                                               'patched': 'needs the patch' if args.check else 'patched'}[state]))
    return 1 if args.check and needed else 0


if __name__ == '__main__':
    sys.exit(main())
