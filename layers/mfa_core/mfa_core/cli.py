"""mfa-admin: the operator's command line, against whichever AWS endpoint is configured.

It reads the same MFA_* environment variables as the functions; set AWS_ENDPOINT_URL to point
it at a local moto server.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger

from mfa_core import audit, audit_trail, members, policy
from mfa_core.errors import InvalidInput, MfaError, NotFound
from mfa_core.identity import ROLES
from mfa_core.runtime import Services, services


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mfa-admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    signing_key = commands.add_parser("signing-key", help="manage the token signing keys")
    signing_key_commands = signing_key.add_subparsers(dest="action", required=True)
    signing_key_commands.add_parser(
        "rotate", help="create a new ES256 signing key and make it the active one"
    )

    org = commands.add_parser("org", help="manage orgs")
    org_commands = org.add_subparsers(dest="action", required=True)
    bootstrap = org_commands.add_parser("bootstrap", help="create an org and its first admin")
    bootstrap.add_argument(
        "--org-id", required=True, help="2-63 lower-case letters, digits, hyphens"
    )
    bootstrap.add_argument("--name", required=True, help="display name of the org")
    bootstrap.add_argument("--admin-email", required=True)
    bootstrap.add_argument(
        "--enforcement",
        choices=members.ENFORCEMENT_LEVELS,
        default="required",
        help="MFA enforcement for the org (default: required)",
    )
    bootstrap.add_argument(
        "--prompt-password",
        action="store_true",
        help="read the admin password from the terminal instead of generating one",
    )

    keys = org_commands.add_parser("webauthn", help="set the org's security key rules")
    keys.add_argument("--org-id", required=True)
    keys.add_argument(
        "--user-verification",
        choices=policy.USER_VERIFICATION,
        help="whether keys must verify the user with a PIN or biometric",
    )
    keys.add_argument(
        "--attestation",
        choices=policy.ATTESTATION,
        help="'direct' makes keys prove their model at registration",
    )
    lists = keys.add_mutually_exclusive_group()
    lists.add_argument(
        "--allow-aaguid",
        action="append",
        metavar="AAGUID",
        help="a key model allowed with --attestation direct; repeat for several. The list "
        "given replaces the current one",
    )
    lists.add_argument(
        "--clear-aaguids",
        action="store_true",
        help="remove the AAGUID allow-list",
    )
    keys.add_argument(
        "--attestation-root",
        action="append",
        metavar="PEM_FILE",
        help="a root certificate that attestation chains must end in, needed with "
        "--attestation direct; repeat for several. The list given replaces the current one",
    )

    phones = org_commands.add_parser("sms", help="set the org's SMS rules")
    phones.add_argument("--org-id", required=True)
    phones.add_argument(
        "--allow-country",
        action="append",
        metavar="CC",
        help="an ISO 3166 region code that SMS codes may go to; repeat for several. The list "
        "given replaces the current one; without any, every country is allowed",
    )
    phones.add_argument("--any-country", action="store_true", help="remove the country allow-list")
    phones.add_argument("--daily-cap", type=int, help="SMS the org may send per day")
    phones.add_argument(
        "--fallback-only",
        action=argparse.BooleanOptionalAction,
        help="keep SMS from being a user's only factor (default: on)",
    )

    org_policy = org_commands.add_parser(
        "policy", help="print the org's MFA policy, or replace it with a JSON document"
    )
    org_policy.add_argument("--org-id", required=True)
    org_policy.add_argument(
        "--set",
        metavar="JSON_FILE",
        help="replace the policy with this whole document (as PUT /v1/orgs/{org}/mfa-policy "
        "takes it); without it, print the current policy",
    )

    _add_audit_and_scan(commands)

    user = commands.add_parser("user", help="manage members")
    user_commands = user.add_subparsers(dest="action", required=True)
    create = user_commands.add_parser("create", help="create a member of an org")
    create.add_argument("--org-id", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--role", choices=ROLES, default="operator")
    create.add_argument(
        "--prompt-password",
        action="store_true",
        help="read the password from the terminal instead of generating one",
    )
    return parser


def _add_audit_and_scan(commands: Any) -> None:
    """Add the `audit` and `cso` commands."""
    trail = commands.add_parser("audit", help="check the audit trail")
    trail_commands = trail.add_subparsers(dest="action", required=True)
    check = trail_commands.add_parser(
        "verify",
        help="recompute the signed digests of the org's audit events; exit 1 when the report is "
        "not valid (tampering found, or no hour sealed yet), 2 on an error",
    )
    check.add_argument("--org-id", required=True)
    check.add_argument(
        "--from",
        dest="start",
        help="first hour to check, ISO 8601 with offset (default: 7 days before --to)",
    )
    check.add_argument(
        "--to", dest="end", help="last hour to check, ISO 8601 with offset (default: now)"
    )
    seal = trail_commands.add_parser(
        "seal",
        help="write the signed digests of every complete hour not sealed yet, as the hourly "
        "sealer does",
    )
    seal.add_argument("--org-id", help="only this org (default: every org)")

    cso = commands.add_parser("cso", help="run the security scan")
    cso_commands = cso.add_subparsers(dest="action", required=True)
    cso_scan = cso_commands.add_parser(
        "scan",
        help="scan the changes since the previous run and print the findings it opened, "
        "updated and resolved",
    )
    cso_scan.add_argument("--org-id", help="scan only this org (default: every org)")
    pack = cso_commands.add_parser(
        "evidence",
        help="print the org's latest compliance evidence pack, which the scan writes daily",
    )
    pack.add_argument("--org-id", required=True)
    pack.add_argument("--format", choices=("json", "md"), default="json")
    pack.add_argument(
        "--new", action="store_true", help="build and store a new pack first, from current data"
    )


# Exit status of a command that failed (argparse uses the same for a usage error).
EXIT_ERROR = 2


def _password(prompt: bool) -> str | None:
    if not prompt:
        return None
    password = getpass.getpass("Password: ")
    if password != getpass.getpass("Repeat password: "):
        raise InvalidInput("The two passwords differ; enter the same one twice.", field="password")
    return password


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # The service's logger: the modules' child loggers write their JSON records through it to
    # stderr, where they would otherwise print only their message. stdout carries the results.
    Logger(logger_handler=logging.StreamHandler(sys.stderr))
    svc = services()
    try:
        if args.command == "signing-key":
            kid = svc.signing_keys.rotate()
            print(json.dumps({"active_kid": kid}))
        elif args.command == "org" and args.action == "webauthn":
            # Options left out keep the org's current values.
            roots = (
                [_read_certificate(path) for path in args.attestation_root]
                if args.attestation_root
                else None
            )
            settings = policy.set_webauthn_policy(
                svc,
                org_id=args.org_id,
                user_verification=args.user_verification,
                attestation=args.attestation,
                allowed_aaguids=[] if args.clear_aaguids else args.allow_aaguid,
                attestation_roots=roots,
            )
            summary = {**settings.as_item(), "attestation_roots": len(settings.attestation_roots)}
            print(json.dumps({"org_id": args.org_id, "webauthn": summary}))
        elif args.command == "org" and args.action == "sms":
            countries = [] if args.any_country else args.allow_country
            rules = policy.set_sms_policy(
                svc,
                org_id=args.org_id,
                allowed_countries=countries,
                daily_cap=args.daily_cap,
                fallback_only=args.fallback_only,
            )
            print(json.dumps({"org_id": args.org_id, "sms": rules.as_item()}))
        elif args.command == "org" and args.action == "policy":
            org = svc.store.get_org(args.org_id)
            if org is None:
                raise NotFound("No org with this id.")
            current = policy.mfa_policy(org)
            if args.set is not None:
                document = _read_json(args.set)
                expected_version = None
                # Also take the file that this command prints: it must be of this org, and
                # the policy must not have changed since it was printed.
                if set(document) == {"org_id", "version", "policy"}:
                    version = document["version"]
                    if (
                        document["org_id"] != args.org_id
                        or not isinstance(document["policy"], dict)
                        or not isinstance(version, int)
                        or isinstance(version, bool)
                    ):
                        raise InvalidInput(
                            f"{args.set} contains the policy of another org, no policy, or no "
                            "version; print the policy again and edit that file.",
                            field="policy",
                        )
                    expected_version = version
                    document = document["policy"]
                current = policy.set_mfa_policy(
                    svc,
                    org_id=args.org_id,
                    policy=policy.parse_policy(document),
                    expected_version=expected_version,
                    actor="operator",
                    context=audit.SYSTEM,
                )
            print(
                json.dumps(
                    {"org_id": args.org_id, "version": current.version, "policy": current.as_json()}
                )
            )
        elif args.command in ("audit", "cso"):
            return _run_audit_or_scan(svc, args)
        elif args.command == "org":
            member = members.bootstrap_org(
                svc,
                org_id=args.org_id,
                name=args.name,
                admin_email=args.admin_email,
                admin_password=_password(args.prompt_password),
                enforcement=args.enforcement,
            )
            _print_member(member)
        else:
            member = members.create_member(
                svc,
                org_id=args.org_id,
                email=args.email,
                role=args.role,
                password=_password(args.prompt_password),
                actor="operator",
                context=audit.SYSTEM,
            )
            _print_member(member)
    except MfaError as exc:
        field = getattr(exc, "field", None)
        where = f" ({field})" if field else ""
        print(f"mfa-admin: {exc.code}{where}: {exc.detail}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _seal_audit(svc: Services, args: argparse.Namespace) -> int:
    """Seal the complete hours of one org, or of every org, and print how many."""
    org_id: str | None = args.org_id
    org = None
    if org_id is not None:
        org = svc.store.get_org(org_id)
        if org is None:
            raise NotFound("No org with this id.")
    sealed = 0
    # Each run seals a limited number of hours per org, so a backlog takes several runs.
    while True:
        hours = audit_trail.seal_all(svc) if org is None else audit_trail.seal_org(svc, org)
        if not hours:
            break
        sealed += hours
        if org is not None:
            org = svc.store.get_org(org.org_id) or org
    print(json.dumps({"org_id": org_id, "hours_sealed": sealed}))
    return 0


def _verify_audit(svc: Services, args: argparse.Namespace) -> int:
    """Print the verification report of the org's audit trail; return 1 when tampered."""
    if svc.store.get_org(args.org_id) is None:
        raise NotFound("No org with this id.")
    window = {
        name: value for name, value in (("from", args.start), ("to", args.end)) if value is not None
    }
    start, end = audit_trail.parse_window(window)
    report = audit_trail.verify(svc, args.org_id, start=start, end=end, max_periods=None)
    print(json.dumps(report.as_json()))
    return 0 if report.valid else 1


def _run_audit_or_scan(svc: Services, args: argparse.Namespace) -> int:
    if args.command == "cso" and args.action == "evidence":
        return _evidence(svc, args)
    if args.command == "cso":
        return _scan(svc, args)
    return _verify_audit(svc, args) if args.action == "verify" else _seal_audit(svc, args)


def _scan(svc: Services, args: argparse.Namespace) -> int:
    """Run the security scan and print each org's result."""
    # Imported here, because the scan imports modules whose loggers take the service name from
    # the environment when they are first imported, and the other commands never need them.
    from mfa_core.cso import scan  # noqa: PLC0415

    if args.org_id is not None and svc.store.get_org(args.org_id) is None:
        raise NotFound("No org with this id.")
    results = scan.scan_all(svc, org_id=args.org_id)
    print(json.dumps({"orgs": [result.as_json() for result in results]}))
    return 0


def _evidence(svc: Services, args: argparse.Namespace) -> int:
    """Print the org's latest evidence pack, after building a new one with --new."""
    from mfa_core.cso import scan  # noqa: PLC0415 - see _scan

    org = svc.store.get_org(args.org_id)
    if org is None:
        raise NotFound("No org with this id.")
    if args.new:
        scan.write_evidence(svc, org)
    sys.stdout.write(svc.evidence_store.latest(args.org_id, args.format).decode())
    return 0


def _read_json(path: str) -> dict[str, Any]:
    try:
        document = json.loads(
            Path(path).read_text(encoding="utf-8"), object_pairs_hook=_reject_duplicate_keys
        )
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(
            f"Cannot read {path} as a JSON file: {exc.__class__.__name__}.", field="policy"
        ) from exc
    if not isinstance(document, dict):
        raise InvalidInput(f"{path} must hold a JSON object.", field="policy")
    return document


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, raising ValueError on a repeated key, as the HTTP API does."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError("duplicate key")
        document[key] = value
    return document


def _read_certificate(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"Cannot read {path} as a PEM certificate file: {exc.__class__.__name__}.",
            field="attestation_roots",
        ) from exc


def _print_member(member: members.NewMember) -> None:
    output = {
        "org_id": member.user.org_id,
        "user_id": member.user.user_id,
        "email": member.user.email,
        "role": member.user.role,
    }
    if member.generated_password is not None:
        # Printed once, to the operator's terminal; it is stored only as an argon2id hash.
        output["password"] = member.generated_password
    print(json.dumps(output))


if __name__ == "__main__":
    raise SystemExit(main())
