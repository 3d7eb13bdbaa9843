"""A real SMTP server on 127.0.0.1 that keeps every message it accepts (aiosmtpd), for the notify role's email.

Not a double: aiosmtpd speaks SMTP (EHLO, AUTH PLAIN and LOGIN when a password file is given, STARTTLS is not
offered), and the messages are the bytes the client sent. Each accepted message is written, whole, to
<MAILBOX>/<n>.eml (n counts from 1), and its envelope to <MAILBOX>/<n>.json ({"from": ..., "to": [...]}).

Run standalone (the local stack does, tests/stack/stack.py):
  python tests/servers/smtp_sink.py MAILBOX [--port N] [--auth-file FILE]
FILE holds "user:password" (one line): then AUTH is required before MAIL FROM. It prints
"smtp sink listening on 127.0.0.1:PORT" once it accepts connections, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Mailbox(object):
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        os.makedirs(path, mode=0o700, exist_ok=True)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's naming)
        with self.lock:
            number = 1 + sum(1 for name in os.listdir(self.path) if name.endswith('.eml'))
            base = os.path.join(self.path, str(number))
            with open(base + '.json.tmp', 'w') as handle:
                json.dump({'from': envelope.mail_from, 'to': list(envelope.rcpt_tos)}, handle)
            with open(base + '.eml.tmp', 'wb') as handle:
                handle.write(envelope.original_content or envelope.content)
            os.replace(base + '.json.tmp', base + '.json')
            os.replace(base + '.eml.tmp', base + '.eml')
        return '250 Message accepted for delivery'


class Authenticator(object):
    def __init__(self, user, password):
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == self.user and auth_data.password == self.password
        return AuthResult(success=ok)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('mailbox')
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--auth-file')
    args = parser.parse_args(argv)
    options = {}
    if args.auth_file:
        with open(args.auth_file) as handle:
            user, password = handle.read().strip().split(':', 1)
        # Plain-text AUTH on loopback: the client is this machine, and TLS is not what the test is about.
        warnings.filterwarnings('ignore', message='Requiring AUTH while not requiring TLS')
        options = dict(authenticator=Authenticator(user, password), auth_required=True, auth_require_tls=False)
    controller = Controller(Mailbox(args.mailbox), hostname='127.0.0.1', port=args.port or 8025, **options)
    controller.start()
    print('smtp sink listening on 127.0.0.1:%d' % controller.port, flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
