"""Independent Azure Blob client for the tests (azure-storage-blob), talking to Azurite.

Usage: azurite_client.py CONNECTION_STRING COMMAND [ARGS...]; prints JSON.
Commands: make-container C, list C [PREFIX], props C BLOB, get C BLOB FILE, put C BLOB FILE,
uncommitted C BLOB (uncommitted block count; -1 if the blob does not exist).
"""
import json
import sys

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient


def main():
    conn, command, *args = sys.argv[1:]
    service = BlobServiceClient.from_connection_string(conn)
    if command == "make-container":
        service.create_container(args[0])
        out = {}
    elif command == "list":
        c = service.get_container_client(args[0])
        prefix = args[1] if len(args) > 1 else None
        out = [{"name": b.name, "size": b.size, "tier": b.blob_tier,
                "content_type": b.content_settings.content_type}
               for b in c.list_blobs(name_starts_with=prefix)]
    elif command == "props":
        p = service.get_blob_client(args[0], args[1]).get_blob_properties()
        out = {"size": p.size, "tier": p.blob_tier, "content_type": p.content_settings.content_type}
    elif command == "get":
        with open(args[2], "wb") as f:
            service.get_blob_client(args[0], args[1]).download_blob().readinto(f)
        out = {}
    elif command == "put":
        with open(args[2], "rb") as f:
            service.get_blob_client(args[0], args[1]).upload_blob(f, overwrite=True)
        out = {}
    elif command == "blocks":
        try:
            committed, uncommitted = service.get_blob_client(args[0], args[1]).get_block_list("all")
            out = {"committed": len(committed), "uncommitted": len(uncommitted)}
        except ResourceNotFoundError:
            out = {"committed": -1, "uncommitted": -1}
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
