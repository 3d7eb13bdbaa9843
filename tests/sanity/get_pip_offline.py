# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offline stand-in for the get-pip.py bootstrap script that ansible-test downloads.

ansible-test (ansible_test/_util/target/setup/requirements.py, bootstrap()) creates every sanity
virtual environment without pip, then runs ``python quiet_pip.py <pip install options>`` with
``GET_PIP=~/.ansible/test/cache/get_pip_<version>.py``; quiet_pip.py runs that file as
``__main__``. The real script is downloaded from ci-files.testing.ansible.com, which this
machine cannot reach. tests/sanity/run.sh copies this file to that cache path, next to a
``pip-<version>-py3-none-any.whl`` fetched from PyPI, so that the bootstrap installs pip from
the wheel instead.

Like get-pip.py, the arguments are ``pip install`` options. ``--no-setuptools`` and
``--no-wheel`` are get-pip.py options that pip itself does not know, so they are dropped.
"""

from __future__ import annotations

import glob
import os
import sys

GET_PIP_ONLY_OPTIONS = frozenset(('--no-setuptools', '--no-wheel'))


def find_wheel(directory):
    """Return the path of the single pip wheel stored next to this script."""
    wheels = sorted(glob.glob(os.path.join(directory, 'pip-*-py3-none-any.whl')))
    if len(wheels) != 1:
        sys.stderr.write('get_pip_offline: expected one pip wheel in %s, found %d\n' % (directory, len(wheels)))
        sys.exit(1)
    return wheels[0]


def main():
    """Install the requested packages with the pip found in the local wheel."""
    wheel = find_wheel(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, wheel)

    from pip._internal.cli.main import main as pip_main  # pylint: disable=import-outside-toplevel

    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    # Prefer the wheel directory, so that the bootstrap's own pip==<version> needs no index.
    args = ['install', '--find-links', os.path.dirname(wheel)] + args
    sys.exit(pip_main(args))


if __name__ == '__main__':
    main()
