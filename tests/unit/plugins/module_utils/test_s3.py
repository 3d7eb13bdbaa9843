"""GrowingFileUploader: a multipart upload that follows a file while it is written (moto in process)."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import boto3
import pytest
from moto import mock_aws

from ansible_collections.runbook.deploy.plugins.module_utils import s3

MIB = 1024 * 1024


@pytest.fixture
def client():
    with mock_aws():
        c = boto3.client('s3', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')
        c.create_bucket(Bucket='bkt')
        yield c


def write_slowly(path, chunks, rewrite_head=None):
    with open(path, 'wb') as handle:
        for chunk in chunks:
            handle.write(chunk)
            handle.flush()
            time.sleep(0.05)
        if rewrite_head is not None:
            # Like pg_dump -Fc: go back and rewrite the header once everything is written.
            handle.seek(0)
            handle.write(rewrite_head)


def test_parts_follow_the_writer_and_changed_parts_are_resent(client, tmp_path):
    path = str(tmp_path / 'archive')
    chunks = [os.urandom(MIB) for dummy in range(17)]
    writer = threading.Thread(target=write_slowly, args=(path, chunks, b'NEWHEAD!'))
    uploader = s3.GrowingFileUploader(client, 'bkt', 'staging/archive', path, part_size=5 * MIB)
    uploader.start()
    writer.start()
    writer.join()
    sha, size, small = uploader.finish()
    final = open(path, 'rb').read()
    assert (sha, size, small) == (hashlib.sha256(final).hexdigest(), 17 * MIB, None)
    assert sorted(uploader.parts) == [1, 2, 3, 4]
    uploader.complete()
    s3.promote(client, 'bkt', 'staging/archive', 'final/archive', {'sha256': sha}, {}, size)
    body = client.get_object(Bucket='bkt', Key='final/archive')['Body'].read()
    assert body == final and body.startswith(b'NEWHEAD!')
    assert client.head_object(Bucket='bkt', Key='final/archive')['Metadata'] == {'sha256': sha}
    assert [o['Key'] for o in client.list_objects_v2(Bucket='bkt')['Contents']] == ['final/archive']


def test_small_files_come_back_whole(client, tmp_path):
    path = tmp_path / 'small'
    path.write_bytes(b'tiny archive')
    uploader = s3.GrowingFileUploader(client, 'bkt', 'staging/small', str(path), part_size=5 * MIB)
    uploader.start()
    sha, size, small = uploader.finish()
    assert small == b'tiny archive' and size == 12 and uploader.upload_id is None


def test_upload_errors_surface_as_s3error(tmp_path):
    with mock_aws():
        c = boto3.client('s3', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')
        path = tmp_path / 'f'
        path.write_bytes(os.urandom(11 * MIB))
        uploader = s3.GrowingFileUploader(c, 'no-such-bucket', 'k', str(path), part_size=5 * MIB)
        uploader.start()
        with pytest.raises(s3.S3Error, match='no-such-bucket|NoSuchBucket'):
            uploader.finish()


@pytest.mark.parametrize('uri,fragment', [('http://x/y', 'not an s3:// URI'), ('s3://bucket', 'must name a bucket and a key'),
                                          ('s3:///key', 'must name a bucket and a key')])
def test_parse_s3_uri_rejects(uri, fragment):
    with pytest.raises(s3.S3Error, match=fragment):
        s3.parse_s3_uri(uri)


def test_part_size_grows_for_huge_files():
    assert s3.choose_part_size(0) == 16 * MIB
    assert s3.choose_part_size(10 * 1024 * MIB) == 16 * MIB
    assert s3.choose_part_size(500 * 1024 * MIB) * 5000 >= 500 * 1024 * MIB
