"""Compliance evidence packs in S3: one JSON and one Markdown object per org and run.

Each run writes `<org_id>/<UTC time>.json` and `.md`, and the same two documents again as
`<org_id>/latest.json` and `latest.md`, so that the newest pack is read without listing the
org's history. The bucket keeps older versions and encrypts every object at rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mfa_core.errors import DependencyFailed, NotFound

LATEST = "latest"


class EvidenceStore:
    def __init__(self, *, s3_client: Callable[[], Any], bucket: str) -> None:
        self._s3_client = s3_client
        self._bucket = bucket

    def put(self, org_id: str, stamp: str, document: dict[str, Any], markdown: str) -> str:
        """Store a pack under `stamp` and as the org's latest; return the JSON object's key."""
        body = json.dumps(document, indent=2, sort_keys=True)
        try:
            for name in (stamp, LATEST):
                self._s3_client().put_object(
                    Bucket=self._bucket,
                    Key=f"{org_id}/{name}.json",
                    Body=body.encode(),
                    ContentType="application/json",
                )
                self._s3_client().put_object(
                    Bucket=self._bucket,
                    Key=f"{org_id}/{name}.md",
                    Body=markdown.encode(),
                    ContentType="text/markdown; charset=utf-8",
                )
        except (BotoCoreError, ClientError) as exc:
            raise DependencyFailed("Storing the evidence pack failed.") from exc
        return f"{org_id}/{stamp}.json"

    def latest(self, org_id: str, extension: str) -> bytes:
        """Return the org's latest pack as JSON (`extension` "json") or Markdown ("md")."""
        try:
            response = self._s3_client().get_object(
                Bucket=self._bucket, Key=f"{org_id}/{LATEST}.{extension}"
            )
            return bytes(response["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound("No evidence pack for this org yet; run the scan first.") from exc
            raise DependencyFailed("Reading the evidence pack failed.") from exc
        except BotoCoreError as exc:
            raise DependencyFailed("Reading the evidence pack failed.") from exc
