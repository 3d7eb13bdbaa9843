"""A real local HTTP feature-flag service for the feature_flag integration tests (the `http` backend).

Not a double of any product: an in-memory flag store shaped like the runbooks' flag API
(`POST /api/v1/feature-flags/dashboard-v2 {"enabled": true, "rolloutPercentage": 10}`), threaded, on 127.0.0.1.

  GET  /api/v1/feature-flags/NAME    200 {"name", "enabled", "rolloutPercentage"} or 404
  POST /api/v1/feature-flags/NAME    stores enabled / rolloutPercentage from the JSON body (upsert), 200
  GET  /nested/NAME                  200 {"data": {"flag": {"on": bool, "percent": n}}} or 404
  PUT  /nested/NAME                  stores a body of that same shape, 200
  POST /ignoring/NAME                answers 200 and stores nothing (an API that drops writes); GET reads the store

Every request needs `Authorization: Bearer <token>` (401 otherwise). `writes` counts the write requests.
"""

from __future__ import annotations

import json
import threading

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def _send(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self):
        service = self.server.service
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        if self.headers.get('Authorization') != 'Bearer %s' % service.token:
            return self._send(401, {'error': 'unauthorized'})
        parts = self.path.strip('/').split('/')
        style, name = '/'.join(parts[:-1]), parts[-1]
        flags = service.flags
        if self.command == 'GET':
            if name not in flags:
                return self._send(404, {'error': 'no flag %s' % name})
            flag = flags[name]
            if style == 'nested':
                return self._send(200, {'data': {'flag': {'on': flag['enabled'], 'percent': flag['rolloutPercentage']}}})
            return self._send(200, dict(name=name, **flag))
        try:
            body = json.loads(raw or b'{}')
        except ValueError:
            return self._send(400, {'error': 'body is not JSON'})
        with service.lock:
            service.writes.append((self.command, self.path, body))
            if style == 'ignoring':
                return self._send(200, {'ok': True})
            flag = flags.setdefault(name, {'enabled': False, 'rolloutPercentage': 100})
            if style == 'nested' and self.command == 'PUT':
                inner = body.get('data', {}).get('flag', {})
                flag['enabled'] = inner.get('on', flag['enabled'])
                flag['rolloutPercentage'] = inner.get('percent', flag['rolloutPercentage'])
            elif style == 'api/v1/feature-flags' and self.command == 'POST':
                if not isinstance(body.get('enabled'), bool):
                    return self._send(400, {'error': 'enabled must be true or false'})
                flag['enabled'] = body['enabled']
                flag['rolloutPercentage'] = body.get('rolloutPercentage', flag['rolloutPercentage'])
            else:
                return self._send(405, {'error': 'method not allowed'})
            return self._send(200, dict(name=name, **flag))

    do_GET = do_POST = do_PUT = _route


class FlagService(object):
    def __init__(self, token):
        self.token = token
        self.flags = {}
        self.writes = []
        self.lock = threading.Lock()
        self.httpd = _Server(('127.0.0.1', 0), _Handler)
        self.httpd.service = self
        self.url = 'http://127.0.0.1:%d' % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
