#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: runbook.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: s3_sync_plan
short_description: Predict what community.aws.s3_sync would upload and delete, without writing
version_added: 0.1.0
description:
  - Lists the files under O(file_root) as C(community.aws.s3_sync) does (O(include) and O(exclude) match file
    names, keys are O(key_prefix) joined with each file's path below O(file_root)), compares each with the object
    under its key the way C(file_change_strategy=checksum) does (the file's MD5, or multipart ETag for a file over
    8 MiB, against the object's ETag), and lists the objects under O(key_prefix) that O(delete=true) would remove.
  - C(community.aws.s3_sync) does not support check mode, so a check run of a deployment skips it; this module is
    its prediction. It only reads (C(ListObjectsV2), C(HeadObject)) and never reports a change.
  - The runbook.deploy.frontend role runs it in check mode over the build a real run would sync.
options:
  bucket:
    description:
      - The bucket the sync would write to.
    type: str
    required: true
  key_prefix:
    description:
      - The prefix the sync writes under (C(community.aws.s3_sync) O(key_prefix)).
    type: str
    default: ''
  file_root:
    description:
      - The local directory the sync would upload (C(community.aws.s3_sync) O(file_root)).
    type: path
    required: true
  include:
    description:
      - Comma-separated shell patterns; only file names matching one are uploaded.
    type: str
    default: '*'
  exclude:
    description:
      - Comma-separated shell patterns; file names matching one are not uploaded, even if included.
    type: str
    default: '.*'
  delete:
    description:
      - Also list the objects under O(key_prefix) that are not among the files, which C(delete=true) removes.
    type: bool
    default: false
  endpoint_url:
    description:
      - URL of an S3-compatible endpoint. Defaults to AWS.
    type: str
  region:
    description:
      - AWS region. Defaults to boto3's usual lookup.
    type: str
  access_key:
    description:
      - AWS access key ID. Defaults to boto3's credential chain (environment, profile, instance role).
    type: str
  secret_key:
    description:
      - AWS secret access key.
    type: str
  session_token:
    description:
      - AWS session token for temporary credentials.
    type: str
  profile:
    description:
      - A named profile from the AWS shared configuration files.
    type: str
attributes:
  check_mode:
    support: full
    description: The module only reads, in check mode as in a normal run.
  diff_mode:
    support: none
    description: The result lists the keys that would change; file contents are not shown.
notes:
  - The comparison is C(community.aws.s3_sync)'s own (C(file_change_strategy=checksum)), so an object uploaded
    with other metadata but the same content is predicted unchanged, as the sync leaves it.
requirements:
  - boto3 and botocore on the managed host
seealso:
  - module: community.aws.s3_sync
author:
  - runbook.deploy contributors (@runbook-deploy)
'''

EXAMPLES = r'''
- name: Predict what the frontend's sync would change
  runbook.deploy.s3_sync_plan:
    bucket: app-frontend-production
    file_root: /srv/builds/frontend/v3.1.0/dist
    delete: true
  register: sync_plan

- name: Show it
  ansible.builtin.debug:
    msg: "Would upload {{ sync_plan.uploads | map(attribute='key') | join(', ') }}; would delete {{ sync_plan.deletes | join(', ') }}"
'''

RETURN = r'''
uploads:
  description: The files the sync would upload, in key order.
  returned: success
  type: list
  elements: dict
  contains:
    key:
      description: The object key.
      type: str
      sample: assets/app.3f2a1c.js
    size:
      description: The file's size in bytes.
      type: int
      sample: 48211
    reason:
      description: V(new) (no object under the key) or V(changed) (the object's ETag differs).
      type: str
      sample: new
deletes:
  description: The keys under O(key_prefix) that O(delete=true) would remove, in order (empty without O(delete)).
  returned: success
  type: list
  elements: str
  sample: [assets/app.1b9e07.js]
unchanged:
  description: How many files already match their object.
  returned: success
  type: int
  sample: 3
would_change:
  description: Whether the sync would upload or delete anything.
  returned: success
  type: bool
  sample: true
'''

import fnmatch
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.runbook.deploy.plugins.module_utils import s3


def local_files(root, include, exclude):
    """[(key path below root, full path, size)] as community.aws.s3_sync gather_files() picks them."""
    found = []
    for dirpath, dummy, filenames in os.walk(root):
        for name in filenames:
            if not any(fnmatch.fnmatch(name, pattern) for pattern in include.split(',')):
                continue
            if exclude and any(fnmatch.fnmatch(name, pattern) for pattern in exclude.split(',')):
                continue
            full = os.path.join(dirpath, name)
            found.append((os.path.relpath(full, start=root), full, os.path.getsize(full)))
    return sorted(found)


def plan(client, p):
    uploads, unchanged = [], 0
    files = local_files(p['file_root'], p['include'], p['exclude'])
    keys = []
    for relative, full, size in files:
        # s3_sync's calculate_s3_path: os.path.join(key_prefix, chopped_path).
        key = os.path.join(p['key_prefix'], relative)
        keys.append(key)
        head = s3.head_or_none(client, p['bucket'], key)
        if head is None:
            uploads.append(dict(key=key, size=size, reason='new'))
        elif head.get('ETag') != s3.multipart_etag(full):
            uploads.append(dict(key=key, size=size, reason='changed'))
        else:
            unchanged += 1
    deletes = []
    if p['delete']:
        present = [key for key, dummy_size, dummy_modified in s3.list_keys(client, p['bucket'], p['key_prefix'])]
        deletes = sorted(set(present) - set(keys))
    return dict(uploads=uploads, deletes=deletes, unchanged=unchanged, would_change=bool(uploads or deletes))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bucket=dict(type='str', required=True),
            key_prefix=dict(type='str', default='', no_log=False),
            file_root=dict(type='path', required=True),
            include=dict(type='str', default='*'),
            exclude=dict(type='str', default='.*'),
            delete=dict(type='bool', default=False),
            endpoint_url=dict(type='str'),
            region=dict(type='str'),
            access_key=dict(type='str', no_log=False),
            secret_key=dict(type='str', no_log=True),
            session_token=dict(type='str', no_log=True),
            profile=dict(type='str'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not s3.HAS_BOTO3:
        module.fail_json(msg='s3_sync_plan needs boto3 and botocore on %s' % os.uname()[1])
    if not os.path.isdir(p['file_root']):
        module.fail_json(msg="file_root '%s' is not a directory" % p['file_root'])
    client = s3.s3_client(dict(s3_endpoint_url=p['endpoint_url'], s3_region=p['region'], s3_access_key=p['access_key'],
                               s3_secret_key=p['secret_key'], s3_session_token=p['session_token'],
                               s3_profile=p['profile'], s3_retries=5))
    try:
        result = plan(client, p)
    except s3.S3Error as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
