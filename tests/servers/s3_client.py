"""Independent S3 client for the tests (boto3), talking to the test server directly.

Usage: s3_client.py ENDPOINT KEY SECRET COMMAND [ARGS...]; prints JSON.
Commands: bootstrap (IAM user, policy and key, for a moto with INITIAL_NO_AUTH_ACTION_COUNT=3),
make-bucket B, make-locked-bucket B, list B [PREFIX], head B KEY, get B KEY FILE, put B KEY FILE,
uploads B (open multipart uploads), delete-all B.
"""
import json
import sys

import boto3
from botocore.config import Config


def client(endpoint, key, secret, service="s3"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def main():
    endpoint, key, secret, command, *args = sys.argv[1:]
    if command == "bootstrap":
        iam = client(endpoint, key, secret, "iam")
        iam.create_user(UserName="dunnage")
        iam.put_user_policy(
            UserName="dunnage", PolicyName="all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        k = iam.create_access_key(UserName="dunnage")["AccessKey"]
        print(json.dumps({"key": k["AccessKeyId"], "secret": k["SecretAccessKey"]}))
        return
    s3 = client(endpoint, key, secret)
    if command == "make-bucket":
        s3.create_bucket(Bucket=args[0])
        out = {}
    elif command == "make-locked-bucket":
        # Object Lock with a default retention: S3 then refuses a PUT without a checksum.
        s3.create_bucket(Bucket=args[0], ObjectLockEnabledForBucket=True)
        s3.put_object_lock_configuration(Bucket=args[0], ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
        out = {}
    elif command == "list":
        prefix = args[1] if len(args) > 1 else ""
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=args[0], Prefix=prefix)
        out = [
            {"key": o["Key"], "size": o["Size"], "etag": o["ETag"].strip('"'),
             "storage_class": o.get("StorageClass", "STANDARD")}
            for page in pages for o in page.get("Contents", [])
        ]
    elif command == "head":
        h = s3.head_object(Bucket=args[0], Key=args[1])
        out = {"content_type": h.get("ContentType"), "storage_class": h.get("StorageClass", "STANDARD"),
               "size": h["ContentLength"], "etag": h["ETag"].strip('"')}
    elif command == "get":
        s3.download_file(args[0], args[1], args[2])
        out = {}
    elif command == "put":
        if args[2] == "-":
            # Streamed from stdin, as `tar | zstd | ...` would (the benchmark's baseline).
            s3.upload_fileobj(sys.stdin.buffer, args[0], args[1])
        else:
            s3.upload_file(args[2], args[0], args[1])
        out = {}
    elif command == "uploads":
        r = s3.list_multipart_uploads(Bucket=args[0])
        out = [{"key": u["Key"], "id": u["UploadId"]} for u in r.get("Uploads", [])]
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
