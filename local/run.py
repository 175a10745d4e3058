"""`mfa-local`: run the MFA service on this machine with a demo org, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from local.gateway import LOOPBACK_HOST
from local.logs import configure_logging
from local.stack import LocalStack

logger = logging.getLogger(__name__)

DEFAULT_API_PORT = 3000
DEMO_ORG_ID = "demo"
DEMO_ORG_NAME = "Demo Org"
DEMO_ADMIN_EMAIL = "admin@demo.example"
STATE_DIRECTORY = Path(__file__).resolve().parent.parent / ".local-state"


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mfa-local",
        description="Run the MFA service locally, with moto in place of AWS.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_API_PORT,
        help=f"TCP port of the HTTP API (default {DEFAULT_API_PORT}, or 0 for a free port)",
    )
    parser.add_argument(
        "--host",
        choices=[LOOPBACK_HOST],
        default=LOOPBACK_HOST,
        help="interface to bind; only the loopback address is allowed",
    )
    parser.add_argument(
        "--moto-port",
        type=int,
        default=0,
        help="TCP port of the moto server that replaces AWS (default 0, a free port)",
    )
    return parser.parse_args(argv)


def write_environment_file() -> Path:
    """Write the stack's environment as a shell file, so `mfa-admin` can reach the same moto.

    The credentials in it are moto's fake ones; the file is rewritten on every start.
    """
    names = sorted(
        name
        for name in os.environ
        if name.startswith(("MFA_", "POWERTOOLS_"))
        or name in {"AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"}
        or name in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED"}
    )
    STATE_DIRECTORY.mkdir(exist_ok=True)
    path = STATE_DIRECTORY / "mfa.env"
    lines = [f"{name}={shlex.quote(os.environ[name])}" for name in names]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    configure_logging()
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("stop requested", extra={"signal": signal.Signals(signum).name})
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    stack = LocalStack(api_port=arguments.port, moto_port=arguments.moto_port)
    try:
        stack.start()
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        print(
            f"A port is already in use ({error.strerror}); stop the other server, or pick free "
            "ports with --port and --moto-port.",
            file=sys.stderr,
        )
        return 1
    try:
        # Imported only now: mfa_core reads its settings from the environment that the stack set.
        from mfa_core import cli  # noqa: PLC0415

        cli.main(["signing-key", "rotate"])
        cli.main(
            [
                "org",
                "bootstrap",
                "--org-id",
                DEMO_ORG_ID,
                "--name",
                DEMO_ORG_NAME,
                "--admin-email",
                DEMO_ADMIN_EMAIL,
                "--enforcement",
                "optional",
            ]
        )

        env_file = write_environment_file()
        port = stack.api_url.rsplit(":", 1)[1]
        print(f"\nMFA service running at http://localhost:{port}")
        print(f"Web page: {stack.page_url}")
        print(f"Demo org: {DEMO_ORG_ID} (admin {DEMO_ADMIN_EMAIL}, password shown above)")
        print(f"AWS stand-in (moto): {stack.aws_endpoint_url}")
        print(f"For mfa-admin against this stack: set -a; . {env_file}; set +a")
        print("Press Ctrl-C to stop.\n", flush=True)

        # A timed wait returns to Python code often, so the signal handlers run promptly.
        while not stop_requested.wait(0.5):
            pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
