"""Standard-library HTTP/WebSocket helpers (plugins/module_utils/http_client.py), without a server where possible."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading

import pytest

from ansible_collections.runbook.deploy.plugins.module_utils import http_client as http


def test_urls():
    assert http.join_url('https://api.example.com/', '/health') == 'https://api.example.com/health'
    assert http.join_url('https://api.example.com/v1', 'health?deep=1') == 'https://api.example.com/v1/health?deep=1'
    assert http.websocket_url('https://h/ws') == 'wss://h/ws' and http.websocket_url('http://h/ws') == 'ws://h/ws'
    assert http.websocket_url('ws://h/ws') == 'ws://h/ws'
    assert http.strip_credentials('https://u:pw@h:8443/x?q=1') == 'https://h:8443/x?q=1'
    assert http.strip_credentials('https://h/x') == 'https://h/x'


def test_secret_headers_are_redacted():
    headers = {'Authorization': 'Bearer abc', 'X-Api-Key': 'k', 'Cookie': 'c', 'X-Auth-Token': 't', 'Accept': 'json'}
    assert http.redact_headers(headers) == {'Authorization': '********', 'X-Api-Key': '********', 'Cookie': '********',
                                            'X-Auth-Token': '********', 'Accept': 'json'}


def test_redactor_hides_secrets_everywhere():
    redact = http.Redactor(['s3cr3t-token', None, ''])
    redact.add_headers({'Authorization': 'Bearer abcdef123', 'Accept': 'application/json'})
    value = {'a': ['x s3cr3t-token y', {'k': 'Bearer abcdef123'}], 'n': 1, 'raw abcdef123': True}
    assert redact(value) == {'a': ['x ******** y', {'k': '********'}], 'n': 1, 'raw ********': True}
    assert redact('application/json') == 'application/json'


def test_missing_ca_path_is_named():
    with pytest.raises(http.HttpError, match="ca_path '/nonexistent.pem' does not exist"):
        http.ssl_context(True, '/nonexistent.pem')
    assert http.ssl_context(False).verify_mode == 0


def test_refused_connection_and_bad_urls_are_explained():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    with pytest.raises(http.HttpError, match='refused'):
        http.request('GET', 'http://127.0.0.1:%d/' % port, timeout=2)
    with pytest.raises(http.HttpError, match='not an absolute http:// or https:// URL'):
        http.request('GET', '/relative')
    with pytest.raises(http.HttpError, match="'http://h:99999/' is not a valid URL"):
        http.request('GET', 'http://h:99999/')


def test_frames_round_trip_through_a_socket_pair():
    left, right = socket.socketpair()
    try:
        for payload in (b'hi', b'x' * 300, b'y' * 70000):
            left.sendall(http._frame(0x1, payload))
            fin, opcode, data = http._read_frame(right)
            assert (fin, opcode, data) == (True, 0x1, payload)
        # an unmasked server frame split in two fragments, with a ping in between
        right.sendall(struct.pack('!BB', 0x01, 3) + b'abc' + struct.pack('!BB', 0x89, 0) + struct.pack('!BB', 0x80, 2) + b'de')
        assert http._read_message(left) == b'abcde'
        fin, opcode, dummy = http._read_frame(right)
        assert opcode == 0xA, 'the ping was answered with a pong'
        right.sendall(struct.pack('!BB', 0x88, 4) + struct.pack('!H', 1008) + b'no')
        with pytest.raises(http.HttpError, match=r'closed the WebSocket \(code 1008: no\)'):
            http._read_message(left)
    finally:
        left.close()
        right.close()


def _one_shot_server(reply):
    """Accept one connection, read the handshake, answer reply(key) and close."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)

    def serve():
        conn, dummy = listener.accept()
        data = b''
        while b'\r\n\r\n' not in data:
            data += conn.recv(4096)
        key = [line.split(b':', 1)[1].strip() for line in data.split(b'\r\n') if line.lower().startswith(b'sec-websocket-key')][0]
        conn.sendall(reply(key.decode()))
        conn.close()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return 'ws://127.0.0.1:%d/ws' % listener.getsockname()[1]


def test_handshake_accept_is_verified():
    url = _one_shot_server(lambda key: b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
                                       b'Sec-WebSocket-Accept: wrong\r\n\r\n')
    with pytest.raises(http.HttpError, match='wrong Sec-WebSocket-Accept'):
        http.websocket_exchange(url, timeout=5)


def test_message_sent_right_after_the_handshake_is_read():
    def reply(key):
        accept = base64.b64encode(hashlib.sha1((key + http.WS_GUID).encode()).digest())
        return (b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
                b'Sec-WebSocket-Accept: ' + accept + b'\r\n\r\n' + struct.pack('!BB', 0x81, 5) + b'hello')
    result = http.websocket_exchange(_one_shot_server(reply), timeout=5, receive=True)
    assert (result.status, result.received) == (101, 'hello')


@pytest.mark.parametrize('headers,why', [
    ({'X-A': 'a\r\nX-B: 1'}, 'line break'), ({'X-A': 'a\rb'}, 'line break'), ({'X-A': 'a\x7fb'}, 'control character'),
    ({'X-A': '\u2603'}, 'Latin-1'), ({'X-A': None}, 'needs a text value'), ({'X-A': {'b': 1}}, 'needs a text value'),
    ({'X A': 'a'}, 'not a valid header name'), ({'X-\u00e9': 'a'}, 'not a valid header name'), ({'': 'a'}, 'not a valid'),
])
def test_check_headers_names_the_option_and_hides_the_value(headers, why):
    with pytest.raises(http.OptionError) as caught:
        http.check_headers(headers, "check 'h': headers")
    message = str(caught.value)
    assert message.startswith("check 'h': headers") and why in message
    assert 'X-B: 1' not in message and '\u2603' not in message


def test_check_headers_keeps_good_values():
    assert http.check_headers({'X-A': 'caf\u00e9\tok', 'X-N': 7, 'Authorization': 'Bearer t'}) == {
        'X-A': 'caf\u00e9\tok', 'X-N': '7', 'Authorization': 'Bearer t'}
    assert http.check_headers(None) == {}


def test_request_refuses_a_bad_header_before_connecting():
    with pytest.raises(http.OptionError, match='line break'):
        http.request('GET', 'http://127.0.0.1:1/', headers={'X-A': 'a\nb'}, timeout=1)


@pytest.mark.parametrize('value,minimum_allowed,ok', [
    (0, True, True), (0, False, False), (-1, True, False), (float('nan'), True, False), (float('inf'), True, False),
    (1e308, True, False), (604800, True, True), (604800.5, True, False), (0.001, False, True), ('5', True, False),
])
def test_check_seconds(value, minimum_allowed, ok):
    if ok:
        assert http.check_seconds(value, 'interval', allow_minimum=minimum_allowed) == float(value)
    else:
        with pytest.raises(http.OptionError, match='^interval must be'):
            http.check_seconds(value, 'interval', allow_minimum=minimum_allowed)


def test_refused_request_has_a_kind():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    with pytest.raises(http.HttpError) as caught:
        http.request('GET', 'http://127.0.0.1:%d/' % port, timeout=1)
    assert caught.value.kind == 'refused'
