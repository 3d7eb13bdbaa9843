# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP and WebSocket helpers for runbook.deploy modules, standard library only.

``request`` makes one HTTP(S) request with ``http.client`` and times it; ``websocket_exchange`` opens a
WebSocket (RFC 6455 handshake), optionally sends one text message and reads one, then closes.  Nothing
needs installing on the managed host.  ``Redactor`` hides secrets (tokens, credential headers, URL
passwords) from anything a module returns.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import os
import re
import socket
import ssl
import struct
import time

from urllib.parse import quote, urlsplit, urlunsplit

WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
SECRET_HEADER_WORDS = ('authorization', 'cookie', 'token', 'secret', 'password', 'api-key', 'apikey', 'x-api-key',
                       'session', 'credential')
MAX_BODY = 4 * 1024 * 1024
# The longest wait any option may ask for: a week covers the longest watch window of the runbooks (24 hours) with
# room, and stays far below what time.sleep() and socket timeouts accept (1e308 raised OverflowError there).
MAX_SECONDS = 7 * 24 * 3600
# RFC 9110 field names are tokens; http.client refuses others with a ValueError.
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class HttpError(Exception):
    """A request could not be made (connection, TLS, timeout); the message is ready for fail_json.

    ``kind`` says what went wrong in a word (refused, timeout, TLS, DNS, connection) for counting.
    """

    def __init__(self, message, kind=None):
        super(HttpError, self).__init__(message)
        self.kind = kind


class OptionError(HttpError):
    """An option's value cannot be used for a request; the message names the option."""


def check_header_value(name, value, option):
    """The header's value as a str http.client can send, or OptionError naming `option`.

    The value itself never appears in the message: headers carry tokens.
    """
    if value is None or isinstance(value, (dict, list, tuple)):
        what = 'nothing' if value is None else type(value).__name__
        raise OptionError("%s: header '%s' needs a text value, not %s" % (option, name, what))
    value = str(value)
    if '\r' in value or '\n' in value:
        # http.client raises a ValueError; sent as is, the rest of the value would be a header of its own
        raise OptionError("%s: header '%s' has a line break (CR or LF) in its value; a header value must be one line"
                          % (option, name))
    if any(ord(c) < 32 and c != '\t' or ord(c) == 127 for c in value):
        raise OptionError("%s: header '%s' has a control character in its value; remove it" % (option, name))
    try:
        value.encode('latin-1')
    except UnicodeEncodeError:
        raise OptionError("%s: header '%s' has a character that is not Latin-1 (ISO-8859-1) in its value, which HTTP "
                          "cannot carry; percent-encode or base64-encode it" % (option, name))
    return value


def check_headers(headers, option='headers'):
    """{name: value} checked as check_header_value does, names as RFC 9110 tokens; raise OptionError naming `option`."""
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise OptionError('%s must be a dictionary of header names and values' % option)
    checked = {}
    for name, value in headers.items():
        name = str(name)
        if not HEADER_NAME.match(name):
            raise OptionError("%s: '%s' is not a valid header name (letters, digits and !#$%%&'*+-.^_`|~ only: no "
                              "spaces, colons or other characters)" % (option, name))
        checked[name] = check_header_value(name, value, option)
    return checked


def check_seconds(value, option, minimum=0.0, allow_minimum=True, maximum=MAX_SECONDS):
    """A number of seconds within [minimum (or above it), maximum], finite; raise OptionError naming `option`."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError('%s must be a number of seconds, not %r' % (option, value))
    low_ok = value >= minimum if allow_minimum else value > minimum
    if math.isnan(value) or not low_ok or value > maximum:
        low = ('%g or more' if allow_minimum else 'more than %g') % minimum
        raise OptionError('%s must be %s seconds and at most %d (7 days), not %s' % (option, low, maximum, value))
    return float(value)


class Response(object):
    def __init__(self, status, reason, headers, body, latency_ms):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.latency_ms = latency_ms

    @property
    def text(self):
        return self.body.decode('utf-8', 'replace')

    def json(self):
        """The body parsed as JSON; raise ValueError when it is not JSON."""
        return json.loads(self.text)


def ssl_context(validate_certs=True, ca_path=None):
    if not validate_certs:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_path and not os.path.exists(ca_path):
        raise HttpError("ca_path '%s' does not exist" % ca_path)
    try:
        return ssl.create_default_context(cafile=ca_path or None)
    except (ssl.SSLError, OSError) as exc:
        raise HttpError("ca_path '%s' is not a PEM CA bundle: %s" % (ca_path, exc))


def join_url(base_url, path):
    """base_url + path, with exactly one slash between them."""
    if not base_url:
        return path
    return base_url.rstrip('/') + '/' + path.lstrip('/')


def strip_credentials(url):
    """The URL without a user:password@ part."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if '@' not in parts.netloc:
        return url
    host = parts.netloc.rsplit('@', 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def is_secret_header(name):
    lowered = name.lower()
    return any(word in lowered for word in SECRET_HEADER_WORDS)


def redact_headers(headers):
    return dict((k, '********' if is_secret_header(k) else v) for k, v in (headers or {}).items())


class Redactor(object):
    """Replace every known secret in strings (recursively in lists and dicts) by ********."""

    def __init__(self, secrets=()):
        self.secrets = sorted(set(s for s in secrets if s and len(s) >= 4), key=len, reverse=True)

    def add(self, *secrets):
        self.__init__(list(self.secrets) + list(secrets))

    def add_headers(self, headers):
        for key, value in (headers or {}).items():
            if is_secret_header(key) and value:
                value = str(value)
                self.add(value)
                # "Bearer abc" -> also hide "abc" on its own
                scheme, dummy, credential = value.partition(' ')
                if credential and scheme.isalpha():
                    self.add(credential)

    def __call__(self, value):
        if isinstance(value, str):
            for secret in self.secrets:
                value = value.replace(secret, '********')
            return value
        if isinstance(value, dict):
            return dict((self(k), self(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return [self(v) for v in value]
        return value


def _split(url, schemes):
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise HttpError("'%s' is not a valid URL (%s)" % (strip_credentials(url), exc))
    if parts.scheme not in schemes or not parts.hostname:
        raise HttpError("'%s' is not an absolute %s URL" % (strip_credentials(url), ' or '.join(s + '://' for s in schemes)))
    target = parts.path or '/'
    if parts.query:
        target += '?' + parts.query
    # http.client sends the request line as ASCII (a UnicodeEncodeError otherwise): percent-encode what is not,
    # as browsers and curl do, and keep what is already encoded
    target = quote(target, safe="!#$%&'()*+,/:;=?@[]~")
    headers = {}
    if parts.username is not None:
        from urllib.parse import unquote
        raw = '%s:%s' % (unquote(parts.username), unquote(parts.password or ''))
        headers['Authorization'] = 'Basic ' + base64.b64encode(raw.encode('utf-8')).decode('ascii')
    return parts, port, target, headers


def error_kind(exc):
    """What went wrong, in a word, for counting failed reads."""
    if isinstance(exc, socket.timeout):
        return 'timeout'
    if isinstance(exc, ssl.SSLError):
        return 'TLS'
    if isinstance(exc, ConnectionRefusedError):
        return 'refused'
    if isinstance(exc, socket.gaierror):
        return 'DNS'
    return 'connection'


def check_url(url, option, schemes=('http', 'https')):
    """Raise OptionError naming `option` when url is not an absolute URL of one of the schemes (port in range)."""
    try:
        _split(url, schemes)
    except HttpError as exc:
        raise OptionError('%s: %s' % (option, exc))


def describe_error(exc, url, timeout):
    where = strip_credentials(url)
    if isinstance(exc, socket.timeout):
        return 'no response from %s within %ss (timeout)' % (where, timeout)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ('TLS certificate of %s not trusted: %s (set ca_path to the CA that signed it, or validate_certs=false '
                'for a test host)' % (where, exc.verify_message or exc))
    if isinstance(exc, ssl.SSLError):
        return 'TLS error talking to %s: %s' % (where, exc)
    if isinstance(exc, ConnectionRefusedError):
        return 'connection to %s refused (is the service listening?)' % where
    if isinstance(exc, socket.gaierror):
        return 'cannot resolve the host of %s: %s' % (where, exc)
    return '%s failed: %s' % (where, exc or exc.__class__.__name__)


def request(method, url, headers=None, body=None, timeout=10, context=None):
    """Make one request; return a Response (any status).  Raise HttpError when there is no response."""
    parts, port, target, auth = _split(url, ('http', 'https'))
    send_headers = dict(auth)
    send_headers.update(check_headers(headers))
    if isinstance(body, str):
        body = body.encode('utf-8')
    if parts.scheme == 'https':
        conn = http.client.HTTPSConnection(parts.hostname, port, timeout=timeout, context=context or ssl_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.request(method, target, body=body, headers=send_headers)
        response = conn.getresponse()
        data = response.read(MAX_BODY)
        latency = (time.monotonic() - started) * 1000.0
        return Response(response.status, response.reason, dict((k.lower(), v) for k, v in response.getheaders()),
                        data, round(latency, 1))
    except (OSError, http.client.HTTPException) as exc:
        raise HttpError(describe_error(exc, url, timeout), kind=error_kind(exc))
    finally:
        conn.close()


def json_request(method, url, headers=None, payload=None, timeout=10, context=None):
    """Send payload as JSON; return (Response, parsed JSON body or None)."""
    send_headers = {'Accept': 'application/json'}
    body = None
    if payload is not None:
        body = json.dumps(payload)
        send_headers['Content-Type'] = 'application/json'
    send_headers.update(headers or {})
    response = request(method, url, headers=send_headers, body=body, timeout=timeout, context=context)
    try:
        parsed = response.json() if response.body.strip() else None
    except ValueError:
        parsed = None
    return response, parsed


# -- WebSocket (RFC 6455), client side --------------------------------------------------------

class WebSocketResult(object):
    def __init__(self):
        self.status = None
        self.handshake_ms = None
        self.latency_ms = None
        self.received = None
        self.error = None


def websocket_url(url):
    """http(s):// -> ws(s)://, for URLs built from base_url."""
    if url.startswith('http://'):
        return 'ws://' + url[len('http://'):]
    if url.startswith('https://'):
        return 'wss://' + url[len('https://'):]
    return url


def _recv_exact(sock, count):
    data = b''
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise HttpError('the server closed the WebSocket connection')
        data += chunk
    return data


def _frame(opcode, payload):
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack('!BB', 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack('!BBH', 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack('!BBQ', 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def _read_frame(sock):
    first, second = struct.unpack('!BB', _recv_exact(sock, 2))
    fin, opcode = first & 0x80, first & 0x0F
    length = second & 0x7F
    if length == 126:
        length = struct.unpack('!H', _recv_exact(sock, 2))[0]
    elif length == 127:
        length = struct.unpack('!Q', _recv_exact(sock, 8))[0]
    if length > MAX_BODY:
        raise HttpError('WebSocket message of %d bytes is too large' % length)
    mask = _recv_exact(sock, 4) if second & 0x80 else None
    payload = _recv_exact(sock, length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bool(fin), opcode, payload


def _read_message(sock):
    """The next data message (text or binary) as bytes; answers pings, fails on close."""
    parts = []
    while True:
        fin, opcode, payload = _read_frame(sock)
        if opcode == 0x9:  # ping
            sock.sendall(_frame(0xA, payload))
            continue
        if opcode == 0xA:  # pong
            continue
        if opcode == 0x8:
            code = struct.unpack('!H', payload[:2])[0] if len(payload) >= 2 else None
            raise HttpError('the server closed the WebSocket (code %s%s) before sending a message'
                            % (code, ': ' + payload[2:].decode('utf-8', 'replace') if len(payload) > 2 else ''))
        parts.append(payload)
        if fin:
            return b''.join(parts)


def _read_http_head(sock):
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise HttpError('the server closed the connection during the WebSocket handshake')
        data += chunk
        if len(data) > 65536:
            raise HttpError('WebSocket handshake response too large')
    head, dummy, rest = data.partition(b'\r\n\r\n')
    lines = head.decode('iso-8859-1').split('\r\n')
    try:
        status = int(lines[0].split(' ', 2)[1])
    except (IndexError, ValueError):
        raise HttpError('not an HTTP response to the WebSocket handshake: %r' % lines[0][:80])
    headers = {}
    for line in lines[1:]:
        key, dummy, value = line.partition(':')
        headers[key.strip().lower()] = value.strip()
    return status, headers, rest


def websocket_exchange(url, headers=None, timeout=10, context=None, send=None, receive=False):
    """Open a WebSocket to url; send `send` (str) if given; read one message if `receive` (or send) is set.

    Returns a WebSocketResult; raises HttpError for connection failures and handshake refusals
    (the result of a refused handshake is in the exception's ``result`` attribute).
    """
    url = websocket_url(url)
    parts, port, target, auth = _split(url, ('ws', 'wss'))
    port = port or (443 if parts.scheme == 'wss' else 80)
    result = WebSocketResult()
    key = base64.b64encode(os.urandom(16)).decode('ascii')
    host = parts.hostname if port in (80, 443) else '%s:%d' % (parts.hostname, port)
    if ':' in parts.hostname and not parts.hostname.startswith('['):
        host = '[%s]:%d' % (parts.hostname, port)
    request_headers = {'Host': host, 'Upgrade': 'websocket', 'Connection': 'Upgrade', 'Sec-WebSocket-Key': key,
                       'Sec-WebSocket-Version': '13'}
    request_headers.update(auth)
    # the handshake is written by hand: a line break in a value would add a header of its own
    request_headers.update(check_headers(headers))
    started = time.monotonic()
    sock = None
    try:
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        if parts.scheme == 'wss':
            sock = (context or ssl_context()).wrap_socket(sock, server_hostname=parts.hostname)
        lines = ['GET %s HTTP/1.1' % target] + ['%s: %s' % kv for kv in request_headers.items()]
        sock.sendall(('\r\n'.join(lines) + '\r\n\r\n').encode('utf-8'))
        status, response_headers, rest = _read_http_head(sock)
        result.status = status
        result.handshake_ms = round((time.monotonic() - started) * 1000.0, 1)
        if status != 101:
            error = HttpError('WebSocket handshake refused with HTTP %d' % status)
            error.result = result
            raise error
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode('ascii')).digest()).decode('ascii')
        if response_headers.get('sec-websocket-accept') != expected:
            error = HttpError('WebSocket handshake answered 101 with a wrong Sec-WebSocket-Accept')
            error.result = result
            raise error
        if rest:
            sock = _Prefixed(sock, rest)
        if send is not None or receive:
            sent = time.monotonic()
            if send is not None:
                sock.sendall(_frame(0x1, send.encode('utf-8')))
            result.received = _read_message(sock).decode('utf-8', 'replace')
            result.latency_ms = round((time.monotonic() - sent) * 1000.0, 1)
        try:
            sock.sendall(_frame(0x8, struct.pack('!H', 1000)))
        except OSError:
            pass
        return result
    except (OSError, ValueError) as exc:
        raise HttpError(describe_error(exc, url, timeout))
    finally:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class _Prefixed(object):
    """A socket whose first recv() calls return bytes already read past the handshake."""

    def __init__(self, sock, prefix):
        self.sock = sock
        self.prefix = prefix

    def recv(self, count):
        if self.prefix:
            data, self.prefix = self.prefix[:count], self.prefix[count:]
            return data
        return self.sock.recv(count)

    def sendall(self, data):
        return self.sock.sendall(data)

    def close(self):
        return self.sock.close()
