# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    # S3 options shared by the runbook.deploy modules that store artefacts in S3.
    # Keep in sync with plugins/module_utils/s3.py s3_argument_spec().
    DOCUMENTATION = r'''
options:
  s3_bucket:
    description:
      - The S3 bucket to store backups in. Without it nothing is uploaded.
    type: str
  s3_prefix:
    description:
      - Key prefix (a "folder") inside O(s3_bucket).
    type: str
    default: ''
  s3_endpoint_url:
    description:
      - URL of an S3-compatible endpoint (MinIO, Ceph, a test emulator). Defaults to AWS.
    type: str
    aliases: [ endpoint_url ]
  s3_region:
    description:
      - AWS region of the bucket. Defaults to boto3's usual lookup (C(AWS_REGION), C(AWS_DEFAULT_REGION), profile).
    type: str
    aliases: [ region ]
  s3_access_key:
    description:
      - AWS access key ID. Defaults to boto3's credential chain (environment, profile, instance role).
    type: str
    aliases: [ access_key, aws_access_key_id ]
  s3_secret_key:
    description:
      - AWS secret access key.
    type: str
    aliases: [ secret_key, aws_secret_access_key ]
  s3_session_token:
    description:
      - AWS session token for temporary credentials.
    type: str
    aliases: [ session_token ]
  s3_profile:
    description:
      - A named profile from the AWS shared configuration files.
    type: str
    aliases: [ profile ]
  s3_storage_class:
    description:
      - Storage class of uploaded objects.
    type: str
    default: STANDARD
    choices: [ STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR, REDUCED_REDUNDANCY ]
  s3_encryption:
    description:
      - Server-side encryption of uploaded objects.
    type: str
    choices: [ AES256, 'aws:kms' ]
  s3_kms_key_id:
    description:
      - The KMS key for O(s3_encryption=aws:kms). Defaults to the bucket's AWS managed key.
    type: str
  s3_retries:
    description:
      - How many times boto3 tries each S3 request (standard retry mode, with backoff) before the task fails.
    type: int
    default: 5
requirements:
  - boto3 >= 1.28 and botocore on the managed host, when O(s3_bucket) or an C(s3://) source is used
'''
