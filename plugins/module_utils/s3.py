# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 helpers for runbook.deploy: client, uploads that overlap the work producing the file, listing.

``StreamingUpload`` uploads a file while the caller is still appending to it (pg_backup streams
pg_dump's output into the file): each part goes up, read back from the file, as soon as it is
complete, straight under the object's final key.  Metadata known at the start travels with
CreateMultipartUpload; a checksum known only at the end is published by the caller as a sidecar
object *before* the upload is completed, then as an object tag (``put_tags``), so the final key
never holds an object whose checksum cannot be found.  ``recorded_checksums`` reads all three back.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
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


class StreamingUpload(object):
    """Multipart upload of a file that the caller is still appending to (see the module docstring).

    The caller reports progress with ``written(total)``; every complete part is uploaded by a pool of
    ``workers`` threads reading it back from the file (so a slow link never holds up the producer and
    memory stays bounded).  ``finish(total)`` sends the last part and waits; it returns False when the
    whole file is smaller than one part and no multipart upload was started (the caller then uses one
    PutObject).  ``complete()`` publishes the object; ``abort()`` removes every uploaded part.
    """

    def __init__(self, client, bucket, key, path, part_size, metadata=None, extra_args=None, workers=4):
        self.client = client
        self.bucket = bucket
        self.key = key
        self.path = path
        self.part_size = max(part_size, MIN_PART_SIZE)
        self.metadata = metadata or {}
        self.extra_args = extra_args or {}
        self.upload_id = None
        self.parts = {}  # part number -> ETag
        self.error = None
        self.submitted = 0  # bytes handed to the workers
        self._number = 0
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix='s3-part')
        self._futures = []

    def _create(self):
        args = dict(self.extra_args)
        if self.metadata:
            args['Metadata'] = self.metadata
        try:
            response = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, **args)
        except Exception as exc:  # pylint: disable=broad-except
            self.error = explain(exc, 'starting the upload to s3://%s/%s failed' % (self.bucket, self.key))
            return False
        self.upload_id = response['UploadId']
        return True

    def _submit(self, length):
        if self.upload_id is None and not self._create():
            return
        self._number += 1
        if self._number > MAX_PARTS:
            self.error = ('s3://%s/%s: more than %d parts of %d bytes; the backup outgrew the part size chosen from '
                          'the database size' % (self.bucket, self.key, MAX_PARTS, self.part_size))
            return
        self._futures.append(self._pool.submit(self._send, self._number, self.submitted, length))
        self.submitted += length

    def _send(self, number, offset, length):
        if self.error:
            return
        try:
            with open(self.path, 'rb') as handle:
                handle.seek(offset)
                data = handle.read(length)
            if len(data) != length:
                raise IOError('%s holds %d bytes at offset %d, expected %d' % (self.path, len(data), offset, length))
            response = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                               PartNumber=number, Body=data)
            with self._lock:
                self.parts[number] = response['ETag']
        except Exception as exc:  # pylint: disable=broad-except
            self.error = self.error or explain(exc, 'upload of part %d to s3://%s/%s failed' % (number, self.bucket, self.key))

    def written(self, total):
        """The file now holds ``total`` bytes: upload every part that is complete."""
        while self.error is None and total - self.submitted >= self.part_size:
            self._submit(self.part_size)

    def finish(self, total):
        """The file is complete at ``total`` bytes: send what is left, wait; False if no multipart upload is needed."""
        self.written(total)
        if self.error is None and self.upload_id is None and total < self.part_size:
            self._pool.shutdown(wait=True)
            return False
        if self.error is None and total > self.submitted:
            self._submit(total - self.submitted)
        concurrent.futures.wait(self._futures)
        self._pool.shutdown(wait=True)
        if self.error:
            raise S3Error(self.error)
        return True

    def complete(self):
        parts = [{'PartNumber': n, 'ETag': self.parts[n]} for n in sorted(self.parts)]
        try:
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                  MultipartUpload={'Parts': parts})
        except Exception as exc:  # pylint: disable=broad-except
            raise S3Error(explain(exc, 'completing the upload to s3://%s/%s failed' % (self.bucket, self.key)))
        self.upload_id = None

    def abort(self):
        """Stop, and abort the multipart upload so no part is left behind (best effort: the caller is failing)."""
        self.error = self.error or 'aborted'
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True)
        if self.upload_id:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:  # pylint: disable=broad-except
                pass
            self.upload_id = None


def put_bytes(client, bucket, key, data, metadata, extra_args):
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=metadata or {}, **extra_args)
    except Exception as exc:  # pylint: disable=broad-except
        raise S3Error(explain(exc, 'upload to s3://%s/%s failed' % (bucket, key)))


def upload_file(client, bucket, key, path, metadata, extra_args):
    args = dict(extra_args)
    args['Metadata'] = metadata
    try:
        client.upload_file(path, bucket, key, ExtraArgs=args)
    except Exception as exc:  # pylint: disable=broad-except
        raise S3Error(explain(exc, 'upload of %s to s3://%s/%s failed' % (path, bucket, key)))


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


def put_tags(client, bucket, key, tags):
    """Set the object's tags (replacing any)."""
    tag_set = [{'Key': k, 'Value': v} for k, v in sorted(tags.items())]
    try:
        client.put_object_tagging(Bucket=bucket, Key=key, Tagging={'TagSet': tag_set})
    except Exception as exc:  # pylint: disable=broad-except
        raise S3Error(explain(exc, 'tagging s3://%s/%s failed' % (bucket, key)))


def _missing(exc):
    """Whether a botocore ClientError says the object (or its tag set) does not exist."""
    response = getattr(exc, 'response', None)
    if not isinstance(response, dict):
        return False
    return response.get('Error', {}).get('Code') in ('NoSuchKey', '404', 'NotFound', 'NoSuchTagSet')


def recorded_checksums(client, bucket, key, head_response=None, sidecar_suffix='.sha256'):
    """Every sha256 recorded for an object: {'metadata': hex, 'tag': hex, 'sidecar': hex}, only those present.

    The sidecar is the ``<key>.sha256`` object in sha256sum format (its first word is the digest).
    """
    found = {}
    response = head_response if head_response is not None else head(client, bucket, key)
    if response.get('Metadata', {}).get('sha256'):
        found['metadata'] = response['Metadata']['sha256'].lower()
    try:
        tags = client.get_object_tagging(Bucket=bucket, Key=key).get('TagSet', [])
    except Exception as exc:  # pylint: disable=broad-except
        if not _missing(exc):
            raise S3Error(explain(exc, 'reading the tags of s3://%s/%s failed' % (bucket, key)))
        tags = []
    for tag in tags:
        if tag.get('Key') == 'sha256' and tag.get('Value'):
            found['tag'] = tag['Value'].lower()
    try:
        text = client.get_object(Bucket=bucket, Key=key + sidecar_suffix)['Body'].read().decode('utf-8', 'replace')
    except Exception as exc:  # pylint: disable=broad-except
        if not _missing(exc):
            raise S3Error(explain(exc, 'reading s3://%s/%s%s failed' % (bucket, key, sidecar_suffix)))
        text = ''
    words = text.split()
    if words:
        found['sidecar'] = words[0].lower()
    return found


def exists(client, bucket, key):
    """Whether the object exists (HeadObject); other errors raise S3Error."""
    try:
        client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # pylint: disable=broad-except
        if _missing(exc):
            return False
        raise S3Error(explain(exc, 'reading s3://%s/%s failed' % (bucket, key)))
    return True


def head_or_none(client, bucket, key):
    """HeadObject's answer, or None when there is no object to compare with. Like community.aws.s3_sync's
    head_s3(), a 403 counts as missing too (a role may write without reading: the sync uploads then)."""
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # pylint: disable=broad-except
        response = getattr(exc, 'response', None)
        code = response.get('Error', {}).get('Code') if isinstance(response, dict) else None
        if _missing(exc) or code in ('403', 'AccessDenied', 'Forbidden'):
            return None
        raise S3Error(explain(exc, 'reading s3://%s/%s failed' % (bucket, key)))


# boto3's TransferConfig().multipart_chunksize: the part size of the uploads s3_sync makes with upload_file().
UPLOAD_CHUNK_SIZE = 8 * MIB


def multipart_etag(path, chunk_size=UPLOAD_CHUNK_SIZE):
    """The ETag S3 gives the file uploaded by boto3's upload_file(): its quoted MD5, or for a file in more than one
    part the MD5 of the parts' MD5s with the part count. The same computation as community.aws's
    module_utils/etag.py calculate_multipart_etag(), which s3_sync's checksum strategy compares."""
    digests = []
    with open(path, 'rb') as handle:
        while True:
            data = handle.read(chunk_size)
            if not data:
                break
            digests.append(hashlib.md5(data))  # nosec: S3's ETag is an MD5, not a security check
    if len(digests) == 1:
        return '"%s"' % digests[0].hexdigest()
    # An empty file gives '"<md5 of nothing>-0"' there, which no object's ETag equals: s3_sync uploads empty files
    # again on every run, and the prediction says so.
    combined = hashlib.md5(b''.join(d.digest() for d in digests))
    return '"%s-%d"' % (combined.hexdigest(), len(digests))
