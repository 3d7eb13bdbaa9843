"""runbook.deploy.s3_sync_plan on the S3 emulator (moto), checked against the tool it predicts: each test plans, then
runs community.aws.s3_sync itself with the frontend role's settings (checksum strategy, delete), and compares what the
sync really uploaded and removed with the plan."""

from __future__ import annotations

import uuid

import boto3
import pytest


@pytest.fixture
def bucket(stack):
    client = boto3.client('s3', endpoint_url=stack['RUNBOOK_S3_ENDPOINT_URL'], region_name='us-east-1')
    name = 'sync-plan-' + uuid.uuid4().hex[:8]
    client.create_bucket(Bucket=name)
    yield client, name
    for item in client.list_objects_v2(Bucket=name).get('Contents', []):
        client.delete_object(Bucket=name, Key=item['Key'])
    client.delete_bucket(Bucket=name)


def _tree(root, files):
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return str(root)


def _plan_then_sync(run_module, stack, name, root, prefix):
    connection = dict(endpoint_url=stack['RUNBOOK_S3_ENDPOINT_URL'], region='us-east-1')
    plan = run_module('runbook.deploy.s3_sync_plan', bucket=name, key_prefix=prefix, file_root=root, delete=True,
                      **connection)
    assert not plan.get('failed') and plan['changed'] is False, plan
    sync = run_module('community.aws.s3_sync', bucket=name, key_prefix=prefix, file_root=root,
                      file_change_strategy='checksum', include='*', exclude='.*', delete=True, **connection)
    assert not sync.get('failed'), sync
    uploaded = sorted(entry['s3_path'] for entry in sync.get('uploads') or [])
    return plan, uploaded, sorted(sync.get('removed') or [])


def test_the_plan_is_what_s3_sync_then_does(run_module, stack, bucket, tmp_path):
    client, name = bucket
    # An object that stays, one that changes, one that goes, under a prefix, and one outside the prefix (kept).
    for key, body in (('site/index.html', b'<p>v1</p>'), ('site/assets/app.1.js', b'one'), ('site/keep.css', b'same'),
                      ('other/readme.txt', b'not ours')):
        client.put_object(Bucket=name, Key=key, Body=body)
    root = _tree(tmp_path / 'dist', {'index.html': b'<p>v2</p>', 'assets/app.2.js': b'two', 'keep.css': b'same',
                                     # A dotfile is excluded, as by the role's sync; a file over one upload part
                                     # has a multipart ETag.
                                     '.env': b'SECRET=1', 'media/big.bin': b'x' * (9 * 1024 * 1024)})

    plan, uploaded, removed = _plan_then_sync(run_module, stack, name, root, 'site/')

    assert [(u['key'], u['reason']) for u in plan['uploads']] == [
        ('site/assets/app.2.js', 'new'), ('site/index.html', 'changed'), ('site/media/big.bin', 'new')], plan
    assert plan['deletes'] == ['site/assets/app.1.js'] and plan['unchanged'] == 1 and plan['would_change'] is True
    assert [u['key'] for u in plan['uploads']] == uploaded
    assert plan['deletes'] == removed
    assert client.get_object(Bucket=name, Key='other/readme.txt')['Body'].read() == b'not ours'

    # Once synced, the same tree: nothing to do, as the sync then finds (the multipart file included).
    again, uploaded, removed = _plan_then_sync(run_module, stack, name, root, 'site/')
    assert again['uploads'] == [] and again['deletes'] == [] and again['would_change'] is False, again
    assert uploaded == [] and removed == []


def test_an_empty_file_is_uploaded_every_time_by_s3_sync_and_the_plan_says_so(run_module, stack, bucket, tmp_path):
    """community.aws's ETag of an empty file ('"<md5>-0"') never equals the object's: the sync uploads it again on
    every run. A plan that said "unchanged" would not be what the sync does."""
    dummy, name = bucket
    root = _tree(tmp_path / 'dist', {'index.html': b'<p>hi</p>', 'robots.txt': b''})
    _plan_then_sync(run_module, stack, name, root, '')
    plan, uploaded, removed = _plan_then_sync(run_module, stack, name, root, '')
    assert [u['key'] for u in plan['uploads']] == uploaded == ['robots.txt'], (plan, uploaded)
    assert removed == []


def test_a_missing_build_is_a_clear_error(run_module, stack, bucket, tmp_path):
    dummy, name = bucket
    result = run_module('runbook.deploy.s3_sync_plan', bucket=name, file_root=str(tmp_path / 'nowhere'),
                        endpoint_url=stack['RUNBOOK_S3_ENDPOINT_URL'], region='us-east-1')
    assert result.get('failed') and "file_root '%s' is not a directory" % (tmp_path / 'nowhere') in result['msg']
