"""Test servers for the preflight molecule scenario (not part of the collection).

  servers.py start --pidfile P --log L --http PORT:DIR --https PORT:CERT:KEY [--https ...]
  servers.py stop --pidfile P

start: one background process (double fork) serving DIR over plain HTTP and an empty page over TLS on each
--https port, so the role can read a health URL and certificates. It returns once every port listens.
stop: ends the process named in the pidfile (if it still runs) and removes the pidfile.
"""
import argparse
import functools
import http.server
import os
import signal
import ssl
import sys
import threading
import time


def serve(args):
    servers = []
    http_port, http_dir = args.http.split(':', 1)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=http_dir)
    servers.append(http.server.ThreadingHTTPServer(('127.0.0.1', int(http_port)), handler))
    for spec in args.https:
        port, cert, key = spec.split(':', 2)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = http.server.ThreadingHTTPServer(('127.0.0.1', int(port)), handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        servers.append(server)
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return servers


def start(args):
    if os.fork():
        # The caller waits for the pidfile, written once every port listens.
        for dummy in range(100):
            if os.path.exists(args.pidfile):
                return 0
            time.sleep(0.1)
        sys.stderr.write('servers did not start; see %s\n' % args.log)
        return 1
    os.setsid()
    if os.fork():
        os._exit(0)
    log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    serve(args)
    with open(args.pidfile + '.tmp', 'w') as handle:
        handle.write('%d\n' % os.getpid())
    os.rename(args.pidfile + '.tmp', args.pidfile)
    signal.signal(signal.SIGTERM, lambda *args: os._exit(0))
    while True:
        time.sleep(3600)


def stop(args):
    try:
        with open(args.pidfile) as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        print('not running')
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
        print('stopped %d' % pid)
    except ProcessLookupError:
        print('not running')
    os.unlink(args.pidfile)
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('action', choices=['start', 'stop'])
    parser.add_argument('--pidfile', required=True)
    parser.add_argument('--log', default=os.devnull)
    parser.add_argument('--http')
    parser.add_argument('--https', action='append', default=[])
    args = parser.parse_args()
    return start(args) if args.action == 'start' else stop(args)


if __name__ == '__main__':
    sys.exit(main())
