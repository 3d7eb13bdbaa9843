# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 helpers for runbook.deploy: client, uploads that overlap the work producing the file, listing.

``GrowingFileUploader`` uploads a file while another process is still writing it: full parts go up
as soon as they exist; at the end one sequential read computes the sha256 and checks every uploaded
part against the final bytes, re-sending any part that changed (pg_dump rewrites the custom-format
table of contents at the start of the file when it finishes).  The object is assembled under a
staging key and copied to its final key with the checksum as metadata, so the final key only ever
holds a complete, checksummed backup.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading

# boto3 takes a third of a second to import: modules load it only when they talk to S3 (s3_client()).
HAS_BOTO3 = importlib.util.find_spec('boto3') is not None and importlib.util.find_spec('botocore') is not None
boto3 = None
botocore = None


def _load_boto3():
    global boto3, botocore  # pylint: disable=global-statement
    if boto3 is None:
        import boto3  # pylint: disable=redefined-outer-name
        import botocore.config  # pylint: disable=redefined-outer-name
        import botocore.exceptions
    return boto3


MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
MAX_PARTS = 10000


class S3Error(Exception):
    """An S3 step failed; the message is ready for fail_json."""


def s3_argument_spec():
    """Argument spec matching the S3 options of the runbook.deploy.s3 doc fragment."""
    return dict(
        s3_bucket=dict(type='str'),
        s3_prefix=dict(type='str', default=''),
        s3_endpoint_url=dict(type='str', aliases=['endpoint_url']),
        s3_region=dict(type='str', aliases=['region']),
        s3_access_key=dict(type='str', no_log=False, aliases=['access_key', 'aws_access_key_id']),
        s3_secret_key=dict(type='str', no_log=True, aliases=['secret_key', 'aws_secret_access_key']),
        s3_session_token=dict(type='str', no_log=True, aliases=['session_token']),
        s3_profile=dict(type='str', aliases=['profile']),
        s3_storage_class=dict(type='str', default='STANDARD', choices=[
            'STANDARD', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'GLACIER_IR', 'REDUCED_REDUNDANCY']),
        s3_encryption=dict(type='str', choices=['AES256', 'aws:kms']),
        s3_kms_key_id=dict(type='str', no_log=False),
        s3_retries=dict(type='int', default=5),
    )


def parse_s3_uri(uri):
    """('bucket', 'key') from s3://bucket/key."""
    if not uri.startswith('s3://'):
        raise S3Error("'%s' is not an s3:// URI" % uri)
    bucket, dummy, key = uri[5:].partition('/')
    if not bucket or not key:
        raise S3Error("'%s' must name a bucket and a key: s3://bucket/path/to/backup" % uri)
    return bucket, key


def join_key(prefix, name):
    prefix = (prefix or '').strip('/')
    return '%s/%s' % (prefix, name) if prefix else name


def s3_client(params):
    """A boto3 S3 client from the s3_* options (credentials fall back to boto3's usual chain)."""
    _load_boto3()
    config = botocore.config.Config(
        retries={'max_attempts': max(1, params.get('s3_retries') or 1), 'mode': 'standard'},
        connect_timeout=10, read_timeout=120, max_pool_connections=16,
    )
    session = boto3.session.Session(
        aws_access_key_id=params.get('s3_access_key'),
        aws_secret_access_key=params.get('s3_secret_key'),
        aws_session_token=params.get('s3_session_token'),
        profile_name=params.get('s3_profile'),
        region_name=params.get('s3_region'),
    )
    return session.client('s3', endpoint_url=params.get('s3_endpoint_url'), config=config)


def write_args(params):
    """Storage class and server-side encryption arguments for uploads and copies."""
    args = {}
    if params.get('s3_storage_class') and params['s3_storage_class'] != 'STANDARD':
        args['StorageClass'] = params['s3_storage_class']
    if params.get('s3_encryption'):
        args['ServerSideEncryption'] = params['s3_encryption']
        if params.get('s3_kms_key_id'):
            args['SSEKMSKeyId'] = params['s3_kms_key_id']
    return args


def explain(exc, action):
    """One-line message for a boto3/botocore exception."""
    if botocore is not None and isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get('Error', {})
        return '%s: %s %s' % (action, err.get('Code', 'error'), err.get('Message', ''))
    if botocore is not None and isinstance(exc, botocore.exceptions.NoCredentialsError):
        return '%s: no AWS credentials found (set s3_access_key/s3_secret_key, s3_profile or the AWS_* environment)' % action
    return '%s: %s' % (action, exc)


def choose_part_size(expected_size):
    """Part size so that expected_size fits in S3's 10,000 parts with room to spare."""
    size = 16 * MIB
    while expected_size and expected_size / size > MAX_PARTS / 2:
        size *= 2
    return size


class GrowingFileUploader(object):
    """Multipart upload of a file that is still being written (see the module docstring)."""

    def __init__(self, client, bucket, staging_key, path, part_size, extra_args=None, workers=4):
        self.client = client
        self.bucket = bucket
        self.key = staging_key
        self.path = path
        self.part_size = max(part_size, MIN_PART_SIZE)
        self.extra_args = extra_args or {}
        self.workers = workers
        self.upload_id = None
        self.parts = {}  # part number -> (etag, md5 hex of the bytes sent)
        self.error = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._sem = threading.Semaphore(workers)
        self._threads = []
        self._follower = None

    # -- following the file while it grows -------------------------------------------------
    def start(self):
        self._follower = threading.Thread(target=self._follow, name='s3-follow')
        self._follower.daemon = True
        self._follower.start()

    def _follow(self):
        # Part 1 waits for the end: it holds the archive header that the writer rewrites last.
        number = 2
        while not self._done.is_set() and self.error is None:
            try:
                size = os.path.getsize(self.path)
            except OSError:
                size = 0
            end = number * self.part_size
            # Only send a part once bytes exist beyond it: the writer may still be filling its end.
            if size > end:
                self._submit(number, (number - 1) * self.part_size)
                number += 1
                continue
            self._done.wait(0.2)

    def _submit(self, number, offset):
        self._sem.acquire()
        thread = threading.Thread(target=self._send, args=(number, offset), name='s3-part-%d' % number)
        thread.daemon = True
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _ensure_upload(self):
        with self._lock:
            if self.upload_id is None:
                response = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, **self.extra_args)
                self.upload_id = response['UploadId']
            return self.upload_id

    def _send(self, number, offset, data=None):
        try:
            if data is None:
                with open(self.path, 'rb') as handle:
                    handle.seek(offset)
                    data = handle.read(self.part_size)
            upload_id = self._ensure_upload()
            response = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=upload_id,
                                               PartNumber=number, Body=data)
            with self._lock:
                self.parts[number] = (response['ETag'], hashlib.md5(data).hexdigest())
        except Exception as exc:  # pylint: disable=broad-except
            self.error = explain(exc, 'upload of part %d to s3://%s/%s failed' % (number, self.bucket, self.key))
        finally:
            self._sem.release()

    def _join(self):
        self._done.set()
        if self._follower:
            self._follower.join()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join()

    # -- finishing ---------------------------------------------------------------------------
    def finish(self):
        """Stop following; read the final file once: return (sha256 hex, size, small).

        Every part whose bytes differ from what was sent is sent again.  ``small`` is the whole
        content when the file fits in one part (the caller then uses a single PUT instead).
        """
        self._join()
        if self.error:
            raise S3Error(self.error)
        digest = hashlib.sha256()
        size = 0
        number = 0
        small = None
        with open(self.path, 'rb') as handle:
            while True:
                data = handle.read(self.part_size)
                if not data:
                    break
                number += 1
                size += len(data)
                digest.update(data)
                if number == 1 and len(data) < self.part_size:
                    small = data
                    continue
                sent = self.parts.get(number)
                if sent is None or sent[1] != hashlib.md5(data).hexdigest():
                    self._sem.acquire()
                    self._send(number, None, data)
                    if self.error:
                        raise S3Error(self.error)
        # Parts beyond the final size (impossible unless the file shrank) would corrupt the object.
        stale = [n for n in self.parts if n > number]
        if stale:
            raise S3Error('the file shrank while it was uploaded (parts %s); refusing to complete the upload' % stale)
        if small is not None and self.upload_id:
            self.abort()
        return digest.hexdigest(), size, small

    def complete(self):
        parts = [{'PartNumber': n, 'ETag': self.parts[n][0]} for n in sorted(self.parts)]
        try:
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                  MultipartUpload={'Parts': parts})
        except Exception as exc:  # pylint: disable=broad-except
            raise S3Error(explain(exc, 'completing the upload to s3://%s/%s failed' % (self.bucket, self.key)))

    def abort(self):
        """Abort the multipart upload (best effort: the caller is already failing)."""
        self._join()
        if self.upload_id:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:  # pylint: disable=broad-except
                pass
            self.upload_id = None


def put_bytes(client, bucket, key, data, metadata, extra_args):
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=metadata, **extra_args)
    except Exception as exc:  # pylint: disable=broad-except
        raise S3Error(explain(exc, 'upload to s3://%s/%s failed' % (bucket, key)))


def upload_file(client, bucket, key, path, metadata, extra_args):
    args = dict(extra_args)
    args['Metadata'] = metadata
    try:
        client.upload_file(path, bucket, key, ExtraArgs=args)
    except Exception as exc:  # pylint: disable=broad-except
        raise S3Error(explain(exc, 'upload of %s to s3://%s/%s failed' % (path, bucket, key)))


SINGLE_COPY_LIMIT = 5 * 1024 * MIB


def promote(client, bucket, staging_key, final_key, metadata, extra_args, size):
    """Copy staging_key to final_key with metadata (server side), then delete staging_key.

    One CopyObject request up to S3's 5 GiB limit (the managed multipart copy is several times slower
    below it), boto3's multipart copy above.
    """
    args = dict(extra_args)
    args.update(Metadata=metadata, MetadataDirective='REPLACE')
    source = {'Bucket': bucket, 'Key': staging_key}
    try:
        if size <= SINGLE_COPY_LIMIT:
            client.copy_object(Bucket=bucket, Key=final_key, CopySource=source, **args)
        else:
            client.copy(source, bucket, final_key, ExtraArgs=args)
    except Exception as exc:  # pylint: disable=broad-except
        raise S3Error(explain(exc, 'copying s3://%s/%s to its final key %s failed' % (bucket, staging_key, final_key)))
    delete_keys(client, bucket, [staging_key])


def list_keys(client, bucket, prefix):
    """[(key, size, last_modified)] under prefix."""
    keys = []
    try:
        paginator = client.get_paginator('list_objects_v2')
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get('Contents', []):
                keys.append((item['Key'], item['Size'], item['LastModified']))
    except Exception as exc:  # pylint: disable=broad-except
        raise S3Error(explain(exc, 'listing s3://%s/%s failed' % (bucket, prefix)))
    return keys


def delete_keys(client, bucket, keys):
    keys = list(keys)
    for start in range(0, len(keys), 1000):
        batch = [{'Key': k} for k in keys[start:start + 1000]]
        try:
            response = client.delete_objects(Bucket=bucket, Delete={'Objects': batch, 'Quiet': True})
        except Exception as exc:  # pylint: disable=broad-except
            raise S3Error(explain(exc, 'deleting objects in s3://%s failed' % bucket))
        if response.get('Errors'):
            first = response['Errors'][0]
            raise S3Error('deleting s3://%s/%s failed: %s' % (bucket, first.get('Key'), first.get('Message')))


def head(client, bucket, key):
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # pylint: disable=broad-except
        raise S3Error(explain(exc, 'reading s3://%s/%s failed' % (bucket, key)))


def download(client, bucket, key, path):
    try:
        client.download_file(bucket, key, path)
    except Exception as exc:  # pylint: disable=broad-except
        raise S3Error(explain(exc, 'download of s3://%s/%s failed' % (bucket, key)))
