"""A real local metrics service for the metrics_watch integration tests and the molecule scenario.

Not a double of any product: a small threaded http.server that exposes the same numbers two ways, and lets a
test change them while a watch runs.

  GET  /metrics        Prometheus text format: counters http_requests_total{method,status} and
                       app_errors_total, a histogram http_request_duration_seconds, gauges app_error_rate,
                       app_queue_size, app_up, a label with escaped quotes and a NaN gauge
  GET  /metrics.json   {"errors": {"rate": ...}, "queue": {"size": ...}, "latency": {"p95_ms": ...}, "status": ...}
  GET  /health         200 {"status": "healthy"}, or the state's health_status (503) when set
  GET  /garbage        200 text/html that is neither JSON nor the Prometheus text format (an error page)
  POST /set            JSON body merged into the state, e.g. {"error_rate": 0.2}; answers the new state
  GET  /state          the state;  GET /stats  requests per path

State: error_rate (0..1), latency_ms (every request takes this long), queue_size, rps (requests per second the
counters grow by), health_status (HTTP status of /health), metrics_status (HTTP status of /metrics and
/metrics.json: another status answers a short error body instead of the numbers). Counters and histogram buckets grow with time at
``rps``, errors at ``rps * error_rate``, observations in the bucket that holds latency_ms, so PromQL-style rates
and quantiles over them give back the state's numbers. ``--state-file`` (JSON) is re-read on every request when
it changed, as another way to change the values.

Run: python tests/servers/metrics_server.py --port 9100 [--pidfile F --daemon] [--state-file F]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import threading
import time

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, float('inf'))
DEFAULTS = dict(error_rate=0.01, latency_ms=80.0, queue_size=12, rps=50.0, health_status=200, metrics_status=200)


def _le(bound):
    return '+Inf' if bound == float('inf') else repr(bound)


class Metrics(object):
    """The state and the counters grown from it; thread-safe."""

    def __init__(self, state_file=None, **values):
        self.lock = threading.Lock()
        self.values = dict(DEFAULTS, **values)
        self.state_file = state_file
        self.state_mtime = None
        self.started = self.last = time.monotonic()
        self.requests = 0.0
        self.errors = 0.0
        self.buckets = dict((b, 0.0) for b in BUCKETS)
        self.duration_sum = 0.0
        self.calls = collections.Counter()

    def _advance(self):
        now = time.monotonic()
        dt, self.last = now - self.last, now
        new = self.values['rps'] * dt
        self.requests += new
        self.errors += new * self.values['error_rate']
        seconds = self.values['latency_ms'] / 1000.0
        for bound in BUCKETS:
            if seconds <= bound:
                self.buckets[bound] += new
        self.duration_sum += new * seconds

    def _read_state_file(self):
        if not self.state_file or not os.path.exists(self.state_file):
            return
        mtime = os.stat(self.state_file).st_mtime_ns
        if mtime == self.state_mtime:
            return
        self.state_mtime = mtime
        with open(self.state_file) as handle:
            self.set(json.load(handle), locked=True)

    def set(self, changes, locked=False):
        if not locked:
            with self.lock:
                return self.set(changes, locked=True)
        self._advance()  # what was served so far counts with the old values
        unknown = set(changes) - set(DEFAULTS)
        if unknown:
            raise ValueError('unknown keys: %s (known: %s)' % (', '.join(sorted(unknown)), ', '.join(sorted(DEFAULTS))))
        self.values.update(changes)
        return dict(self.values)

    def snapshot(self):
        with self.lock:
            self._read_state_file()
            self._advance()
            return dict(self.values), self.requests, self.errors, dict(self.buckets), self.duration_sum

    def prometheus(self):
        values, requests, errors, buckets, duration_sum = self.snapshot()
        ok = requests - errors
        lines = [
            '# HELP http_requests_total Requests served, by method and status.',
            '# TYPE http_requests_total counter',
            'http_requests_total{method="GET",status="200"} %.3f' % (ok * 0.8),
            'http_requests_total{method="POST",status="200"} %.3f' % (ok * 0.2),
            'http_requests_total{method="GET",status="500"} %.3f' % errors,
            '# HELP app_errors_total Requests answered with a 5xx.',
            '# TYPE app_errors_total counter',
            'app_errors_total %.3f %d' % (errors, int(time.time() * 1000)),
            '# HELP http_request_duration_seconds Request latency.',
            '# TYPE http_request_duration_seconds histogram',
        ]
        for bound in BUCKETS:
            lines.append('http_request_duration_seconds_bucket{le="%s"} %.3f' % (_le(bound), buckets[bound]))
        lines += [
            'http_request_duration_seconds_sum %.6f' % duration_sum,
            'http_request_duration_seconds_count %.3f' % buckets[float('inf')],
            '# HELP app_error_rate Share of requests answered with a 5xx (0..1).',
            '# TYPE app_error_rate gauge',
            'app_error_rate %s' % values['error_rate'],
            '# TYPE app_queue_size gauge',
            'app_queue_size{queue="write \\"sync\\"",path="C:\\\\q\\nx"} %s' % values['queue_size'],
            '# a free comment, then a gauge that has no value yet',
            '# TYPE app_cache_ratio gauge',
            'app_cache_ratio NaN',
            'app_up 1',
        ]
        return '\n'.join(lines) + '\n'

    def document(self):
        values, requests, errors, dummy, dummy2 = self.snapshot()
        return {'status': 'healthy' if values['health_status'] < 400 else 'unhealthy',
                'errors': {'rate': values['error_rate'], 'total': round(errors, 3)},
                'requests': {'total': round(requests, 3)},
                'queue': {'size': values['queue_size']},
                'latency': {'p95_ms': values['latency_ms']}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'metrics-server/1'

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status, payload, content_type='application/json'):
        body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802  (http.server's naming)
        metrics = self.server.metrics
        path = urlsplit(self.path).path
        with metrics.lock:
            metrics.calls[path] += 1
        if path in ('/metrics', '/metrics.json'):
            status = int(metrics.snapshot()[0]['metrics_status'])
            if status != 200:
                return self._send(status, {'error': 'metrics unavailable (metrics_status %d)' % status})
        if path == '/metrics':
            return self._send(200, metrics.prometheus(), 'text/plain; version=0.0.4; charset=utf-8')
        if path == '/metrics.json':
            return self._send(200, metrics.document())
        if path == '/health':
            values = metrics.snapshot()[0]
            status = int(values['health_status'])
            return self._send(status, {'status': 'healthy' if status < 400 else 'unhealthy'})
        if path == '/garbage':
            return self._send(200, '<html><body><h1>502 Bad Gateway</h1></body></html>\n', 'text/html')
        if path == '/state':
            return self._send(200, metrics.snapshot()[0])
        if path == '/stats':
            with metrics.lock:
                return self._send(200, dict(metrics.calls))
        return self._send(404, {'error': 'no such endpoint: %s' % path})

    def do_POST(self):  # noqa: N802
        path = urlsplit(self.path).path
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        if path != '/set':
            return self._send(404, {'error': 'no such endpoint: %s' % path})
        try:
            changes = json.loads(body or b'{}')
            if not isinstance(changes, dict):
                raise ValueError('the body must be a JSON object')
            return self._send(200, self.server.metrics.set(changes))
        except ValueError as exc:
            return self._send(400, {'error': str(exc)})


class MetricsServer(object):
    """The metrics service on 127.0.0.1 (a free port unless given); start() then stop()."""

    def __init__(self, port=0, state_file=None, **values):
        self.metrics = Metrics(state_file, **values)
        self.httpd = _Server(('127.0.0.1', port), _Handler)
        self.httpd.metrics = self.metrics
        self.port = self.httpd.server_address[1]
        self.url = 'http://127.0.0.1:%d' % self.port
        self.thread = None

    def set(self, **changes):
        return self.metrics.set(changes)

    @property
    def calls(self):
        return self.metrics.calls

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread:
            self.thread.join(5)


def _daemonize():
    """Detach (double fork) so the caller, e.g. an Ansible task, returns once the server listens."""
    if os.fork():
        os._exit(0)  # pylint: disable=protected-access
    os.setsid()
    if os.fork():
        os._exit(0)  # pylint: disable=protected-access
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


def _stop(signum, frame):
    raise SystemExit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--state-file')
    parser.add_argument('--pidfile', help='written once the server listens')
    parser.add_argument('--daemon', action='store_true', help='run in the background (needs --pidfile)')
    args = parser.parse_args()
    if args.daemon and not args.pidfile:
        parser.error('--daemon needs --pidfile')
    server = MetricsServer(args.port, args.state_file)  # bind before detaching: a busy port fails the caller
    if args.daemon:
        read_end, write_end = os.pipe()
        if os.fork():  # the caller waits until the daemon has written its pid file
            os.close(write_end)
            ready = os.read(read_end, 1)
            print(server.url if ready else 'the metrics server did not start', flush=True)
            os._exit(0 if ready else 1)  # pylint: disable=protected-access
        os.close(read_end)
        _daemonize()
    if args.pidfile:
        with open(args.pidfile + '.tmp', 'w') as handle:
            handle.write('%d\n' % os.getpid())
        os.rename(args.pidfile + '.tmp', args.pidfile)
    if args.daemon:
        os.write(write_end, b'x')
        os.close(write_end)
    else:
        print(server.url, flush=True)
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.httpd.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.httpd.server_close()
        if args.pidfile and os.path.exists(args.pidfile):
            os.unlink(args.pidfile)
    return 0


if __name__ == '__main__':
    sys.exit(main())
