"""Helpers shared by the integration tests (importable as ``helpers``: pytest.ini puts this folder on sys.path)."""

from __future__ import annotations

import os

import psycopg2

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def connect(stack, dbname='postgres'):
    conn = psycopg2.connect(host=stack['RUNBOOK_PG_HOST'], port=int(stack['RUNBOOK_PG_PORT']),
                            user=stack['RUNBOOK_PG_USER'], password=stack['RUNBOOK_PG_PASSWORD'], dbname=dbname)
    conn.autocommit = True
    return conn


def sql(stack, dbname, statement, args=None):
    conn = connect(stack, dbname)
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, args)
            return cursor.fetchall() if cursor.description else None
    finally:
        conn.close()


def assert_clear_failure(result, *fragments):
    """The module failed with a message naming every fragment, and no traceback as the message."""
    assert result.get('failed'), result
    msg = result.get('msg', '')
    assert 'Traceback' not in msg, msg
    for fragment in fragments:
        assert fragment in msg, 'expected %r in %r' % (fragment, msg)
