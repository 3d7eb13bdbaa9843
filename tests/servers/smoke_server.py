"""A real local HTTP(S) + WebSocket service for the smoke_test integration tests and bench.

Not a double of any product: a small threaded server with the kinds of endpoints a release is checked
against. HTTP (http.server, one thread per connection):

  /healthy                 200 {"status": "healthy", ...}
  /slow?ms=N               sleeps N ms, then 200 {"status": "healthy", "slept_ms": N}
  /fail                    500 {"status": "unhealthy"}
  /flap?key=K&fails=N      503 for the first N calls with key K, then 200
  /json                    200, a nested document (see NESTED)
  /text                    200 text/html page
  /status/N                status N
  /echo                    200, echoes method, path, headers and body as JSON (any method)
  /redirect                302 to /healthy

WebSocket (the `websockets` library, a separate port; the module's own client is stdlib):

  /echo      echoes every message          /push    sends {"type": "hello"} on connect, then echoes
  /reject    handshake refused with 403    /silent  accepts, never sends anything

``calls`` counts requests per (method, path) and per flap key, so tests can see what ran.
Run standalone: python tests/servers/smoke_server.py [--tls CERT KEY]
"""

from __future__ import annotations

import argparse
import collections
import json
import ssl
import threading
import time

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NESTED = {
    'status': 'healthy',
    'version': '1.2.0',
    'ready': True,
    'checks': {'db': {'status': 'ok', 'connections': 3}, 'redis': {'status': 'ok'}},
    'items': [{'id': 1, 'name': 'alpha'}, {'id': 2, 'name': 'beta'}],
    'a.b': 'dotted',
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'smoke-server/1'

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status, payload, content_type='application/json', extra=None):
        body = payload if isinstance(payload, bytes) else (
            json.dumps(payload).encode() if content_type == 'application/json' else payload.encode())
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def _handle(self):
        parts = urlsplit(self.path)
        query = dict((k, v[0]) for k, v in parse_qs(parts.query).items())
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        state = self.server.state
        with state.lock:
            state.calls[(self.command, parts.path)] += 1
        path = parts.path
        if path == '/healthy':
            return self._send(200, {'status': 'healthy', 'timestamp': time.time()})
        if path == '/slow':
            ms = int(query.get('ms', '200'))
            time.sleep(ms / 1000.0)
            return self._send(200, {'status': 'healthy', 'slept_ms': ms})
        if path == '/fail':
            return self._send(500, {'status': 'unhealthy', 'error': 'database unreachable'})
        if path == '/flap':
            key = query.get('key', 'default')
            with state.lock:
                state.flaps[key] += 1
                count = state.flaps[key]
            if count <= int(query.get('fails', '2')):
                return self._send(503, {'status': 'starting', 'call': count})
            return self._send(200, {'status': 'healthy', 'call': count})
        if path == '/json':
            return self._send(200, NESTED)
        if path == '/text':
            return self._send(200, '<html><title>Release 1.2.0</title><body>ok</body></html>', 'text/html')
        if path.startswith('/status/'):
            return self._send(int(path.rsplit('/', 1)[1]), {'status': path.rsplit('/', 1)[1]})
        if path == '/echo':
            return self._send(200, {'method': self.command, 'path': self.path, 'headers': dict(self.headers.items()),
                                    'body': body.decode('utf-8', 'replace')})
        if path == '/redirect':
            return self._send(302, {'location': '/healthy'}, extra={'Location': '/healthy'})
        return self._send(404, {'error': 'no such endpoint: %s' % path})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class _State(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = collections.Counter()
        self.flaps = collections.Counter()


def _ws_handler(connection):
    from websockets.exceptions import ConnectionClosed
    path = connection.request.path
    try:
        if path == '/silent':
            for dummy in connection:
                pass
            return
        if path == '/push':
            connection.send(json.dumps({'type': 'hello', 'server': 'smoke-server'}))
        for message in connection:
            if path in ('/echo', '/push'):
                try:
                    parsed = json.loads(message)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict) and parsed.get('type') == 'subscribe':
                    connection.send(json.dumps({'type': 'subscribed', 'organizationId': parsed.get('organizationId')}))
                else:
                    connection.send(message)
    except (ConnectionClosed, TimeoutError):
        pass


def _ws_process_request(connection, request):
    if request.path == '/reject':
        return connection.respond(403, 'Forbidden\n')
    return None


class SmokeServer(object):
    """HTTP server + WebSocket server on 127.0.0.1 free ports; start() then stop()."""

    def __init__(self, certfile=None, keyfile=None, websocket=True):
        self.state = _State()
        self.tls = None
        if certfile:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(certfile, keyfile)
        self.httpd = _Server(('127.0.0.1', 0), _Handler)
        self.httpd.state = self.state
        if self.tls:
            self.httpd.socket = self.tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.scheme = 'https' if self.tls else 'http'
        self.url = '%s://127.0.0.1:%d' % (self.scheme, self.port)
        self.ws = None
        self.ws_url = None
        if websocket:
            from websockets.sync.server import serve
            self.ws = serve(_ws_handler, '127.0.0.1', 0, process_request=_ws_process_request, ssl=self.tls)
            self.ws_url = '%s://127.0.0.1:%d' % ('wss' if self.tls else 'ws', self.ws.socket.getsockname()[1])
        self.threads = []

    @property
    def calls(self):
        return self.state.calls

    def start(self):
        targets = [self.httpd.serve_forever] + ([self.ws.serve_forever] if self.ws else [])
        for target in targets:
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.ws:
            self.ws.shutdown()
        for thread in self.threads:
            thread.join(5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tls', nargs=2, metavar=('CERT', 'KEY'))
    args = parser.parse_args()
    server = SmokeServer(*(args.tls or ())).start()
    print('http: %s\nwebsocket: %s' % (server.url, server.ws_url), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == '__main__':
    main()
