"""The service's error hierarchy.

Each class carries a stable machine-readable `code`; mfa_core.http maps the classes to HTTP
status codes and RFC 9457 problem responses in one table. A `detail` is shown to the caller,
so it never contains a submitted value, a secret or whether an account exists.
"""

from __future__ import annotations


class MfaError(Exception):
    code = "error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(MfaError):
    """A request field is missing, malformed or out of range."""

    code = "invalid_input"

    def __init__(self, detail: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.field = field
        if code is not None:
            self.code = code


class RegistrationRejected(InvalidInput):
    """A security key's registration failed verification or the org's attestation rules.

    `reason` names the failed check for the audit trail; `field` is the request field at fault.
    """

    def __init__(self, detail: str, *, reason: str, field: str = "credential") -> None:
        super().__init__(detail, field=field, code="registration_rejected")
        self.reason = reason


class UnsupportedMediaType(InvalidInput):
    """The request body is not declared as JSON."""

    def __init__(self) -> None:
        super().__init__(
            "Send the body as JSON with the header Content-Type: application/json.",
            code="unsupported_media_type",
        )


class AuthenticationFailed(MfaError):
    """Wrong credentials, or an account that does not exist: the two look the same."""

    code = "authentication_failed"

    def __init__(self, detail: str = "The email or password is incorrect.") -> None:
        super().__init__(detail)


class RecoveryCodeRequired(AuthenticationFailed):
    """The user's MFA was reset: login needs the recovery code from the approving admin."""

    code = "recovery_code_required"

    def __init__(self) -> None:
        super().__init__(
            "Your MFA was reset. Sign in with your password and the recovery code that your "
            "admin gave you (field recovery_code); if it expired, ask for a new reset."
        )


class SsoLoginFailed(AuthenticationFailed):
    """An SSO login failed: the IdP's response did not verify, or it names no usable member.

    Every cause gets the same detail, so the response does not reveal whether an account
    exists. `reason` names the cause for the audit trail and the logs.
    """

    code = "sso_failed"

    def __init__(self, reason: str) -> None:
        super().__init__(
            "The sign-in through your identity provider could not be completed; start it again."
        )
        self.reason = reason


class InvalidToken(MfaError):
    code = "invalid_token"

    def __init__(self, detail: str = "The bearer token is missing, invalid or expired.") -> None:
        super().__init__(detail)


class InvalidCode(MfaError):
    code = "invalid_code"

    def __init__(
        self, detail: str = "The verification code is incorrect or was already used."
    ) -> None:
        super().__init__(detail)


class InvalidCredential(MfaError):
    """A WebAuthn assertion failed verification, or its challenge is unknown, spent or expired."""

    code = "invalid_credential"

    def __init__(
        self, detail: str = "The security key's response could not be verified; try again."
    ) -> None:
        super().__init__(detail)


class Forbidden(MfaError):
    code = "forbidden"


class MethodNotAllowed(Forbidden):
    """The org's policy, or the enrollment token, does not allow this kind of factor."""

    code = "factor_type_not_allowed"


class StepUpRequired(Forbidden):
    """The caller is authenticated, but the operation needs a stronger or more recent MFA.

    `required_acr` and `max_mfa_age` (seconds, None for no limit) state the requirement, and
    `missing` lists what the token lacks: "acr", "mfa" or "mfa_age" (see mfa_core.stepup).
    """

    code = "step_up_required"

    def __init__(
        self,
        detail: str,
        *,
        max_mfa_age: int | None,
        required_acr: str = "aal2",
        missing: list[str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.max_mfa_age = max_mfa_age
        self.required_acr = required_acr
        self.missing = list(missing or [])


class NotFound(MfaError):
    code = "not_found"


class Conflict(MfaError):
    code = "conflict"


class SessionLimitReached(Conflict):
    """The user has as many sessions as the org allows, and the org rejects new ones."""

    code = "session_limit_reached"


class LoginBlocked(Forbidden):
    """The org's policy blocks a login that looks anomalous (a new country, impossible travel)."""

    code = "login_blocked"


class PreconditionFailed(MfaError):
    """The resource changed since the caller read it (an If-Match that no longer matches)."""

    code = "precondition_failed"


class LastFactor(Conflict):
    """Removing the factor would leave a user without MFA where the org requires it."""

    code = "last_factor"


class LockedOut(MfaError):
    """Too many consecutive failed verifications; retry after `retry_after` seconds."""

    code = "locked_out"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "Too many failed verification attempts. The account is locked; "
            f"try again in {retry_after} seconds."
        )
        self.retry_after = max(1, retry_after)


class Throttled(MfaError):
    """A rate limit is reached; retry after `retry_after` seconds. `limit` names the limit."""

    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after: int, limit: str) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)
        self.limit = limit


class DependencyFailed(MfaError):
    """An AWS dependency failed; nothing was half-written, and the request can be retried."""

    code = "dependency_failed"

    def __init__(self, detail: str = "A backing service failed. Retry the request.") -> None:
        super().__init__(detail)


class ConfigurationError(MfaError):
    """The deployment is misconfigured: our fault, not the caller's."""

    code = "configuration_error"
