"""The tests' two caches of what Ansible builds for each module run (tests/scripts/site/) change nothing a module runs.

The bytecode cache of the payloads' module_utils runs exactly the code the payload holds: a changed source is compiled
again, file names are the payload's, packages and plain zips import as before. The run-wide AnsiballZ cache lets a
second playbook run reuse the payload the first one built. Without their variables, neither is installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

SITE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts', 'site')
# Imports the package's module from the zip the way AnsiballZ does (the zip first on sys.path), prints what it saw.
PROBE = '''
import json, sys
import runbook_payload_bytecode_cache
sys.path.insert(0, sys.argv[1])
from shipped import values
print(json.dumps({
    "value": values.VALUE,
    "file": values.__file__,
    "code_file": values.where.__code__.co_filename,
    "package_file": sys.modules["shipped"].__file__,
    "hook": type(sys.path_importer_cache[sys.argv[1]]).__name__,
}))
'''


def _payload(directory, name, value):
    path = os.path.join(str(directory), name)
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('shipped/__init__.py', '')
        archive.writestr('shipped/values.py', 'VALUE = %r\n\ndef where():\n    return VALUE\n' % value)
    return path


def _import(payload, cache):
    env = dict(os.environ, PYTHONPATH=SITE)
    env.pop('RUNBOOK_PAYLOAD_BYTECODE_CACHE', None)
    if cache is not None:
        env['RUNBOOK_PAYLOAD_BYTECODE_CACHE'] = str(cache)
    result = subprocess.run([sys.executable, '-c', PROBE, payload], env=env, capture_output=True, text=True,
                            check=True, timeout=60)
    return json.loads(result.stdout)


def _cached_files(cache):
    return sorted(os.path.join(root, name) for root, _directories, names in os.walk(str(cache)) for name in names)


def test_a_payload_is_compiled_once_then_served_from_the_cache_with_its_own_file_names(tmp_path):
    cache = tmp_path / 'cache'
    first = _import(_payload(tmp_path, 'ansible_one_payload.zip', 'v1'), cache)
    assert first['hook'] == 'PayloadImporter'
    entries = _cached_files(cache)
    assert len(entries) == 2, entries  # shipped/__init__.py and shipped/values.py

    (tmp_path / 'other').mkdir()
    second_zip = _payload(tmp_path / 'other', 'ansible_one_payload.zip', 'v1')
    second = _import(second_zip, cache)
    assert _cached_files(cache) == entries
    assert second['value'] == 'v1'
    # A cached code object names the file of the payload that ran it, not the one that filled the cache.
    assert second['file'] == second['code_file'] == os.path.join(second_zip, 'shipped', 'values.py')
    assert second['package_file'] == os.path.join(second_zip, 'shipped', '__init__.py')


def test_a_changed_source_is_compiled_again(tmp_path):
    cache = tmp_path / 'cache'
    assert _import(_payload(tmp_path, 'ansible_one_payload.zip', 'v1'), cache)['value'] == 'v1'
    (tmp_path / 'next').mkdir()
    assert _import(_payload(tmp_path / 'next', 'ansible_one_payload.zip', 'v2'), cache)['value'] == 'v2'
    assert len(_cached_files(cache)) == 3  # one __init__.py, two values.py


def test_other_zips_and_runs_without_the_variable_import_as_python_does(tmp_path):
    cache = tmp_path / 'cache'
    plain = _import(_payload(tmp_path, 'library.zip', 'v1'), cache)
    assert plain['hook'] == 'zipimporter' and plain['value'] == 'v1'
    unset = _import(_payload(tmp_path, 'ansible_one_payload.zip', 'v1'), None)
    assert unset['hook'] == 'zipimporter' and unset['value'] == 'v1'
    assert not cache.exists()


def test_a_corrupt_cache_entry_is_compiled_again(tmp_path):
    cache = tmp_path / 'cache'
    payload = _payload(tmp_path, 'ansible_one_payload.zip', 'v1')
    _import(payload, cache)
    for entry in _cached_files(cache):
        with open(entry, 'wb') as handle:
            handle.write(b'\x00not marshal')
    assert _import(payload, cache)['value'] == 'v1'


def _ping(env):
    ansible = os.path.join(os.path.dirname(sys.executable), 'ansible')
    result = subprocess.run([ansible, 'localhost', '-m', 'ansible.builtin.ping', '-e',
                             'ansible_python_interpreter=%s' % sys.executable],
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and '"pong"' in result.stdout, result


def test_the_playbook_runs_of_a_test_run_share_one_ansiballz_cache(tmp_path):
    shared = tmp_path / 'ansiballz'
    local_temp = tmp_path / 'local-temp'
    env = dict(os.environ, PYTHONPATH=SITE, ANSIBLE_LOCAL_TEMP=str(local_temp), RUNBOOK_ANSIBALLZ_CACHE=str(shared))
    _ping(env)
    payload = shared / 'ansible.modules.ping-ZIP_DEFLATED-none'
    assert payload.is_file(), sorted(os.listdir(str(shared)))
    built = payload.stat().st_mtime_ns
    _ping(env)
    assert payload.stat().st_mtime_ns == built  # the second run used the first run's payload
    assert os.listdir(str(local_temp)) == []  # each run's own directory went, with its link, not the cache

    env.pop('RUNBOOK_ANSIBALLZ_CACHE')
    shutil.rmtree(str(shared))
    _ping(env)
    assert not shared.exists()
