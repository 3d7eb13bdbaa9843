"""A real tiny incoming-webhook server (Slack-compatible answers) that records what it is sent.

Not a double of any product: a threaded HTTP server on 127.0.0.1 for the notify role's molecule scenario.
Every POST body is appended, as one JSON line, to the file named on the command line (a body that is not
JSON is recorded as a JSON string). The answers follow Slack's incoming webhooks:

  POST, JSON with "text", "blocks" or "attachments"   200 "ok"
  POST, body not JSON                                 400 "invalid_payload"
  POST, JSON without any of those                     400 "no_text"
  any other method                                    405 "method_not_allowed"
  with --fail-status N                                N "recorder told to fail" (the POST is still recorded)

Run standalone (as a background process):
  python tests/servers/webhook_recorder.py RECORD.jsonl [--port N] [--fail-status N]
It prints "webhook recorder listening on http://127.0.0.1:PORT" once it accepts connections, and stops on
SIGTERM or SIGINT. Any path is accepted, like a webhook URL's /services/T.../B.../token.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'webhook-recorder/1'

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header('Content-Type', 'text/plain; charset=utf-8')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        text = raw.decode('utf-8', 'replace')
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        self.server.recorder.record(payload if payload is not None else text)
        if self.server.recorder.fail_status:
            return self._answer(self.server.recorder.fail_status, 'recorder told to fail')
        if payload is None:
            return self._answer(400, 'invalid_payload')
        if not isinstance(payload, dict) or not any(payload.get(k) for k in ('text', 'blocks', 'attachments')):
            return self._answer(400, 'no_text')
        return self._answer(200, 'ok')

    def _refuse(self):
        self._answer(405, 'method_not_allowed')

    do_GET = do_PUT = do_DELETE = do_PATCH = _refuse


class WebhookRecorder(object):
    """The server, writing to `path`; start() then stop(). `url` is its base URL."""

    def __init__(self, path, port=0, fail_status=None):
        self.path = path
        self.fail_status = fail_status
        self.lock = threading.Lock()
        self.httpd = _Server(('127.0.0.1', port), _Handler)
        self.httpd.recorder = self
        self.port = self.httpd.server_address[1]
        self.url = 'http://127.0.0.1:%d' % self.port
        self.thread = None

    def record(self, payload):
        line = json.dumps(payload, sort_keys=True, separators=(',', ':')) + '\n'
        with self.lock:
            with open(self.path, 'a', encoding='utf-8') as record:
                record.write(line)

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread:
            self.thread.join(5)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('record', help='file each POST body is appended to, one JSON line each')
    parser.add_argument('--port', type=int, default=0, help='port on 127.0.0.1 (default: a free one)')
    parser.add_argument('--fail-status', type=int, metavar='N',
                        help='answer every POST with status N (it is still recorded)')
    args = parser.parse_args(argv)
    if args.fail_status is not None and not 100 <= args.fail_status <= 599:
        parser.error('--fail-status must be an HTTP status code (100-599)')
    open(args.record, 'a', encoding='utf-8').close()
    server = WebhookRecorder(args.record, args.port, args.fail_status).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *dummy: stop.set())
    print('webhook recorder listening on %s' % server.url, flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
