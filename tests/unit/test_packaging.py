"""What the collection says about itself is true: the ansible-core and collection versions it claims, the Python and
system requirements an execution environment gets (issue 17, "Compatibility and packaging").

The tarball's contents are checked where it is built (tests/integration/collection/test_build_and_install.py).
"""

from __future__ import annotations

import json
import os
import re

import ansible
import yaml
from ansible.galaxy.dependency_resolution.versioning import meets_requirements
from ansible.release import __version__ as ansible_core_version
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Where the venv's `ansible` bundle keeps its collections (the ones the tests run with).
BUNDLE = os.path.join(os.path.dirname(os.path.dirname(ansible.__file__)), 'ansible_collections')
# Namespaces of the core and of this collection: never dependencies.
OWN = ('ansible.builtin', 'ansible.legacy', 'runbook.deploy')
# An FQCN in a task (module, action, include_role name), a filter/lookup/test, or a Python import.
FQCN = re.compile(r'(?<![\w.])((?:community|amazon|ansible|kubernetes|awx|containers|cloud)\.[a-z_]+)\.[a-z_0-9]+')
PY_IMPORT = re.compile(r'ansible_collections\.([a-z_]+)\.([a-z_]+)\.')


def _load(path):
    with open(os.path.join(REPO, path)) as handle:
        return yaml.safe_load(handle)


def _files(*tops, suffixes=('.yml', '.yaml', '.py', '.j2')):
    for top in tops:
        for dirpath, dummy, filenames in os.walk(os.path.join(REPO, top)):
            for name in filenames:
                if name.endswith(suffixes):
                    yield os.path.join(dirpath, name)


def _shipped(path, build_ignore):
    """Files the tarball holds (build_ignore's patterns are paths from the root)."""
    relative = os.path.relpath(path, REPO)
    return not any(relative == ignored or relative.startswith(ignored.rstrip('/') + '/') for ignored in build_ignore)


def _used_collections():
    """{collection: first file that uses it}: FQCNs in YAML and templates, ansible_collections imports in Python."""
    build_ignore = _load('galaxy.yml')['build_ignore']
    used = {}
    for path in _files('roles', 'playbooks', 'plugins', 'meta'):
        if not _shipped(path, build_ignore):
            continue
        with open(path) as handle:
            text = handle.read()
        if path.endswith('.py'):
            # In Python, ansible.* is ansible-core's own package; collections are imported as ansible_collections.
            found = {'%s.%s' % m.groups() for m in PY_IMPORT.finditer(text)}
        else:
            found = {m.group(1) for m in FQCN.finditer(text)}
        for name in sorted(found):
            if not name.startswith(OWN):
                used.setdefault(name, os.path.relpath(path, REPO))
    return used


def test_every_collection_the_roles_playbooks_and_plugins_use_is_a_dependency():
    declared = set(_load('galaxy.yml')['dependencies'])
    used = _used_collections()
    missing = {name: where for name, where in used.items() if name not in declared}
    assert not missing, 'used but not in galaxy.yml dependencies (name: first file): %s' % missing
    # And nothing is declared that nothing uses.
    assert declared <= set(used), declared - set(used)


def test_the_installed_collections_are_the_ones_galaxy_yml_declares():
    for name, requirement in _load('galaxy.yml')['dependencies'].items():
        manifest = os.path.join(BUNDLE, *name.split('.'), 'MANIFEST.json')
        assert os.path.isfile(manifest), '%s is declared but not installed in the test venv' % name
        with open(manifest) as handle:
            version = json.load(handle)['collection_info']['version']
        assert meets_requirements(version, requirement), (name, version, requirement)


def test_requires_ansible_starts_at_the_tested_ansible_core():
    """The floor is the version CI runs (2.17 was claimed and failed a real deployment): a lower claim is untested."""
    claim = SpecifierSet(_load('meta/runtime.yml')['requires_ansible'])
    tested = Version(ansible_core_version)
    assert tested in claim, (claim, tested)
    floors = [Version(spec.version) for spec in claim if spec.operator in ('>=', '>')]
    assert floors, claim
    assert (floors[0].major, floors[0].minor) == (tested.major, tested.minor), (claim, tested)
    with open(os.path.join(REPO, 'README.md')) as handle:
        readme = handle.read()
    assert '`requires_ansible >= %d.%d`' % (tested.major, tested.minor) in readme


def test_python_requirements_are_ranges_and_the_test_venv_pins_them():
    """An execution environment holds other collections: exact pins would fight theirs. The test venv pins."""
    def requirements(path):
        with open(os.path.join(REPO, path)) as handle:
            return [line.split('#')[0].strip() for line in handle if line.split('#')[0].strip()]

    runtime = requirements('requirements/python.txt')
    assert runtime
    pinned = {}
    for line in requirements('requirements/dev.txt'):
        if '==' in line:
            name, version = line.split('==')
            pinned[name.lower()] = version
    for line in runtime:
        assert '==' not in line and '>=' in line, line
        name, dummy, floor = line.partition('>=')
        assert name.lower() in pinned, '%s: the test venv must pin the version it tests' % name
        assert Version(pinned[name.lower()]) >= Version(floor), line


def test_system_requirements_name_the_supported_versions():
    """bindep entries carry the support matrix's floors (a versionless name resolves to whatever the image has)."""
    floors = {'postgresql-client': 15, 'postgresql': 15, 'nodejs': 20}
    with open(os.path.join(REPO, 'requirements', 'bindep.txt')) as handle:
        entries = [line.strip() for line in handle if line.strip() and not line.startswith('#')]
    seen = set()
    for entry in entries:
        match = re.match(r'^(\S+)\s+\[[^\]]+\]\s+>=(\d+)$', entry)
        assert match, entry
        assert int(match.group(2)) >= floors[match.group(1)], entry
        seen.add(match.group(1))
    assert seen == set(floors)
