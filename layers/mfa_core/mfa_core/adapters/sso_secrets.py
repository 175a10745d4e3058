"""Each org's OIDC client secret, one Secrets Manager secret per org under a name prefix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

NOT_FOUND = "ResourceNotFoundException"


class SsoSecretStore:
    """Write and read the client secrets; the function's IAM policy names only the prefix."""

    def __init__(self, client: Callable[[], Any], *, prefix: str, kms_key_id: str) -> None:
        self._client = client
        self._prefix = prefix
        self._kms_key_id = kms_key_id

    def name(self, org_id: str) -> str:
        return f"{self._prefix}{org_id}"

    def put(self, org_id: str, value: str) -> None:
        """Store a new version of the org's secret, creating the secret on first use."""
        client = self._client()
        try:
            client.put_secret_value(SecretId=self.name(org_id), SecretString=value)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != NOT_FOUND:
                raise
            client.create_secret(
                Name=self.name(org_id),
                SecretString=value,
                KmsKeyId=self._kms_key_id,
                Description="OIDC client secret of one org's SSO connection",
            )

    def get(self, org_id: str) -> str | None:
        """Return the org's current secret, or None when it has none."""
        try:
            secret = self._client().get_secret_value(SecretId=self.name(org_id))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == NOT_FOUND:
                return None
            raise
        value = secret.get("SecretString")
        return str(value) if value else None
