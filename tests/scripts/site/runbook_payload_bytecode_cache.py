"""A bytecode cache for the module_utils that every Ansible module run imports from its AnsiballZ payload (tests only).

Ansible ships each module run its module_utils as a zip (the AnsiballZ payload) that Python imports with zipimport, which
never caches bytecode: every module run compiled ansible.module_utils.basic and ~110 other files from source, and
CPython 3.11's zipimporter compiles each of them twice (``get_filename``, which the import spec asks for, compiles too).
That was ~0.12 of the ~0.28 CPU seconds of a module run, and module runs were half of the test suite's CPU time
(process accounting of a whole run). With this cache, CI's run went from 2,803 to 2,427 CPU seconds.

This importer serves the same code objects from a cache keyed by the interpreter's bytecode magic number, the module's
name and its source, the way Python caches any module it imports from a directory: a changed source is a new key, so a
stale entry is never used, and the code object is the one ``compile`` returns for that source (its file name is set to
the file in this payload, as importlib does for a cached .pyc). The modules run exactly the code they run without it.

It is active only when RUNBOOK_PAYLOAD_BYTECODE_CACHE names a directory (tests/scripts/env.sh sets it), only for the
payloads' zips (``ansible_*_payload.zip``), and only in the test venv, whose site-packages loads it through a .pth file
tests/scripts/bootstrap.sh writes. Deployments never load it.
"""
import os
import sys

_DIRECTORY = os.environ.get('RUNBOOK_PAYLOAD_BYTECODE_CACHE')
_PAYLOAD_SUFFIX = '_payload.zip'


def _install():
    import _imp
    import hashlib
    import marshal
    import zipimport
    from importlib.util import MAGIC_NUMBER

    # Looked up here, not at the first import: a Python without them raises now, and nothing is installed.
    module_info, module_path_of, read_entry = zipimport._get_module_info, zipimport._get_module_path, zipimport._get_data

    class PayloadImporter(zipimport.zipimporter):
        """zipimport's importer with a bytecode cache and a ``get_filename`` that does not compile."""

        def _relative_source_path(self, fullname):
            is_package = module_info(self, fullname)  # None: not in this zip
            if is_package is None:
                return None
            module_path = module_path_of(self, fullname)
            relative = module_path + os.sep + '__init__.py' if is_package else module_path + '.py'
            return relative if relative in self._files else None

        def get_filename(self, fullname):
            relative = self._relative_source_path(fullname)
            if relative is None:
                return super().get_filename(fullname)
            return self.archive + os.sep + relative

        def get_code(self, fullname):
            relative = self._relative_source_path(fullname)
            if relative is None:
                return super().get_code(fullname)
            source = read_entry(self.archive, self._files[relative])
            key = hashlib.sha256(MAGIC_NUMBER + fullname.encode() + b'\0' + source).hexdigest()
            cached = os.path.join(_DIRECTORY, key[:2], key)
            filename = self.archive + os.sep + relative
            try:
                with open(cached, 'rb') as handle:
                    code = marshal.loads(handle.read())
            except (OSError, EOFError, ValueError, TypeError):
                code = compile(source.replace(b'\r\n', b'\n').replace(b'\r', b'\n'), filename, 'exec',
                               dont_inherit=True)
                _store(cached, marshal.dumps(code))
                return code
            _imp._fix_co_filename(code, filename)
            return code

    def _store(path, data):
        # Written whole then renamed: a concurrent reader sees the old state or the new file, never half of it.
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = '%s.%d.tmp' % (path, os.getpid())
            with open(temporary, 'wb') as handle:
                handle.write(data)
            os.replace(temporary, path)
        except OSError:
            pass

    def payload_path_hook(path):
        archive_head, suffix, _inside = path.partition(_PAYLOAD_SUFFIX)
        if not suffix or not os.path.basename(archive_head).startswith('ansible_'):
            raise ImportError('not an AnsiballZ payload: %s' % path)
        return PayloadImporter(path)

    sys.path_hooks.insert(0, payload_path_hook)
    sys.path_importer_cache.clear()


# zipimport's helpers this relies on are CPython's (3.8 to 3.12 keep them): without them, imports stay as they are.
if _DIRECTORY and sys.implementation.name == 'cpython':
    try:
        _install()
    except (ImportError, AttributeError):
        pass
