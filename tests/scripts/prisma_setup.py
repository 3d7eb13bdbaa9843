"""Make the repository's Prisma 6.19.3 CLI work offline, and exit when it is done, for the tests and the demo.

The test project (tests/fixtures/prisma/app) and the sample app run Prisma's JS schema engine (WebAssembly) through
the pg driver adapter (`engine: "js"` in prisma.config.ts), because the native schema engine would have to be
downloaded.  That path has two upstream bugs, which this script patches in node_modules:

1. prisma/orm#27403: @prisma/adapter-pg does not map the PostgreSQL type `name` (oid 19) to a column type, and
   `prisma migrate deploy` then fails with "Column type 'name' could not be deserialized" (its own queries read
   `current_schema()`, which is of type `name`).  Patch: `case 19:` among the adapter's text types in
   node_modules/@prisma/adapter-pg/dist/index.js and index.mjs.
2. The CLI stays alive 10 s after its work is done: the WebAssembly schema engine arms a 10 s timer (its
   advisory-lock and connection deadlines) through wasm-bindgen's `setTimeout` glue and never clears it, so Node
   waits for it before exiting (seen here: `migrate deploy` printed its result at 4.2 s and exited at 14.8 s;
   `process.getActiveResourcesInfo()` then holds one Timeout, armed with 10000 ms from the wasm module).  Patch: the
   glue unrefs timers of 5 s or more in node_modules/prisma/build/index.js.  An unref'd timer still fires while the
   CLI has work in flight (a query waiting for the lock keeps its socket, and so the process, alive), so the
   deadline semantics are unchanged; it only no longer holds an idle process open.

Idempotent: a patched file carries a marker comment and is left alone.  Run it after `npm ci` (bootstrap.sh):

    .venv/bin/python tests/scripts/prisma_setup.py [--check] [--node-modules DIR]

--check only reports (exit 1 when a file still needs a patch).  Exit 2 when the code no longer has the expected
shape (another version): then check whether the upstream fix landed and drop that patch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPECTED_VERSION = '6.19.3'


class Patch(object):
    def __init__(self, package, files, marker, anchor, replacement):
        self.package = package
        self.files = files
        self.marker = marker
        self.anchor = anchor
        self.replacement = replacement


PATCHES = (
    Patch(package=os.path.join('@prisma', 'adapter-pg'), files=('dist/index.js', 'dist/index.mjs'),
          marker='runbook.deploy patch: prisma/orm#27403',
          anchor='    case ScalarColumnType.BPCHAR:\n',
          replacement='    case 19: // runbook.deploy patch: prisma/orm#27403: PostgreSQL `name` (oid 19) is text\n'
                      '    case ScalarColumnType.BPCHAR:\n'),
    Patch(package='prisma', files=('build/index.js',),
          marker='runbook.deploy patch: wasm timers unref',
          anchor='function rlt(e,r){return setTimeout(e,r>>>0)}',
          replacement='function rlt(e,r){/* runbook.deploy patch: wasm timers unref */'
                      'const t=setTimeout(e,r>>>0);if((r>>>0)>=5000&&t.unref)t.unref();return t}'),
)


def patch_text(text, patch):
    """Return (new text, state) where state is 'patched', 'already' or 'unknown'."""
    if patch.marker in text:
        return text, 'already'
    if text.count(patch.anchor) != 1:
        return text, 'unknown'
    return text.replace(patch.anchor, patch.replacement), 'patched'


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
    parser.add_argument('--check', action='store_true', help='report only; exit 1 if a file needs a patch')
    args = parser.parse_args(argv)
    needed = False
    for patch in PATCHES:
        package = os.path.join(args.node_modules, patch.package)
        if not os.path.isdir(package):
            print('prisma_setup: %s is missing; run tests/scripts/bootstrap.sh (npm ci) first' % package, file=sys.stderr)
            return 2
        with open(os.path.join(package, 'package.json')) as handle:
            version = json.load(handle).get('version')
        if version != EXPECTED_VERSION:
            print('prisma_setup: warning: %s is %s, the patch was written for %s'
                  % (patch.package, version, EXPECTED_VERSION), file=sys.stderr)
        for name in patch.files:
            path = os.path.join(package, name)
            with open(path) as handle:
                text = handle.read()
            new_text, state = patch_text(text, patch)
            if state == 'unknown':
                print('prisma_setup: %s does not have the expected code (%r); is the upstream fix in %s %s?'
                      % (path, patch.anchor.strip(), patch.package, version), file=sys.stderr)
                return 2
            if state == 'patched':
                needed = True
                if not args.check:
                    write_atomically(path, new_text)
            print('prisma_setup: %s/%s: %s' % (patch.package, name, {
                'already': 'already patched', 'patched': 'needs the patch' if args.check else 'patched'}[state]))
    return 1 if args.check and needed else 0


if __name__ == '__main__':
    sys.exit(main())
