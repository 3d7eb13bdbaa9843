"""StreamingUpload: a multipart upload that follows a file while it is appended to (moto in process)."""

from __future__ import annotations

import hashlib
import os
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


def append(path, data):
    with open(path, 'ab') as handle:
        handle.write(data)
    return os.path.getsize(path)


def wait_for(predicate, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_parts_go_up_while_the_file_grows_under_the_final_key(client, tmp_path):
    path = str(tmp_path / 'archive')
    uploader = s3.StreamingUpload(client, 'bkt', 'final/archive', path, part_size=5 * MIB, metadata={'db': 'app'})
    size = 0
    for dummy in range(3):
        size = append(path, os.urandom(2 * MIB))
        uploader.written(size)
    # 6 MiB written: part 1 is complete and goes up before the file is finished.
    assert wait_for(lambda: 1 in uploader.parts), 'part 1 was not uploaded while the file grew'
    size = append(path, os.urandom(11 * MIB + 123))
    uploader.written(size)
    assert uploader.finish(size) is True
    assert sorted(uploader.parts) == [1, 2, 3, 4]
    assert not client.list_objects_v2(Bucket='bkt').get('Contents'), 'the object exists before complete()'
    uploader.complete()
    body = client.get_object(Bucket='bkt', Key='final/archive')['Body'].read()
    assert body == open(path, 'rb').read()
    assert client.head_object(Bucket='bkt', Key='final/archive')['Metadata'] == {'db': 'app'}
    assert not client.list_multipart_uploads(Bucket='bkt').get('Uploads')


def test_a_file_smaller_than_a_part_needs_no_multipart_upload(client, tmp_path):
    path = tmp_path / 'small'
    path.write_bytes(b'tiny archive')
    uploader = s3.StreamingUpload(client, 'bkt', 'small', str(path), part_size=5 * MIB)
    uploader.written(12)
    assert uploader.finish(12) is False
    assert uploader.upload_id is None and not client.list_multipart_uploads(Bucket='bkt').get('Uploads')


def test_a_failing_part_surfaces_and_abort_leaves_nothing(client, tmp_path):
    path = str(tmp_path / 'archive')
    size = append(path, os.urandom(16 * MIB))

    def fail_part_two(params, **dummy):
        if params.get('PartNumber') == 2:
            raise RuntimeError('S3 went away')

    client.meta.events.register('provide-client-params.s3.UploadPart', fail_part_two)
    uploader = s3.StreamingUpload(client, 'bkt', 'final/archive', path, part_size=5 * MIB)
    uploader.written(size)
    with pytest.raises(s3.S3Error, match='part 2.*S3 went away'):
        uploader.finish(size)
    assert uploader.upload_id
    uploader.abort()
    assert not client.list_multipart_uploads(Bucket='bkt').get('Uploads')
    assert not client.list_objects_v2(Bucket='bkt').get('Contents')


def test_upload_errors_surface_as_s3error(tmp_path):
    with mock_aws():
        c = boto3.client('s3', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')
        path = tmp_path / 'f'
        path.write_bytes(os.urandom(11 * MIB))
        uploader = s3.StreamingUpload(c, 'no-such-bucket', 'k', str(path), part_size=5 * MIB)
        uploader.written(11 * MIB)
        with pytest.raises(s3.S3Error, match='no-such-bucket|NoSuchBucket'):
            uploader.finish(11 * MIB)


def test_recorded_checksums_from_metadata_tag_and_sidecar(client):
    digest = hashlib.sha256(b'x').hexdigest()
    client.put_object(Bucket='bkt', Key='a', Body=b'x')
    assert s3.recorded_checksums(client, 'bkt', 'a') == {}
    client.put_object(Bucket='bkt', Key='b', Body=b'x', Metadata={'sha256': digest})
    client.put_object_tagging(Bucket='bkt', Key='b', Tagging={'TagSet': [{'Key': 'sha256', 'Value': digest.upper()}]})
    client.put_object(Bucket='bkt', Key='b.sha256', Body=('%s  b\n' % ('0' * 64)).encode())
    assert s3.recorded_checksums(client, 'bkt', 'b') == {'metadata': digest, 'tag': digest, 'sidecar': '0' * 64}
    assert s3.exists(client, 'bkt', 'b') and not s3.exists(client, 'bkt', 'nope')
    s3.put_tags(client, 'bkt', 'a', {'sha256': digest})
    assert s3.recorded_checksums(client, 'bkt', 'a') == {'tag': digest}


@pytest.mark.parametrize('uri,fragment', [('http://x/y', 'not an s3:// URI'), ('s3://bucket', 'must name a bucket and a key'),
                                          ('s3:///key', 'must name a bucket and a key')])
def test_parse_s3_uri_rejects(uri, fragment):
    with pytest.raises(s3.S3Error, match=fragment):
        s3.parse_s3_uri(uri)


def test_part_size_grows_for_huge_files():
    assert s3.choose_part_size(0) == 16 * MIB
    assert s3.choose_part_size(10 * 1024 * MIB) == 16 * MIB
    assert s3.choose_part_size(500 * 1024 * MIB) * 5000 >= 500 * 1024 * MIB
