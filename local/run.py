"""`mfa-local`: run the MFA service on this machine with a demo org, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from local.gateway import LOOPBACK_HOST
from local.logs import configure_logging
from local.stack import LocalStack

logger = logging.getLogger(__name__)

DEFAULT_API_PORT = 3000
DEMO_ORG_ID = "demo"
DEMO_ORG_NAME = "Demo Org"
DEMO_ADMIN_EMAIL = "admin@demo.example"


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


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    configure_logging()
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("stop requested", extra={"signal": signal.Signals(signum).name})
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    with LocalStack(api_port=arguments.port, moto_port=arguments.moto_port) as stack:
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

        port = stack.api_url.rsplit(":", 1)[1]
        print(f"\nMFA service running at http://localhost:{port}")
        print(f"Demo org: {DEMO_ORG_ID} (admin {DEMO_ADMIN_EMAIL}, password shown above)")
        print(f"AWS stand-in (moto): {stack.aws_endpoint_url}")
        print("Press Ctrl-C to stop.\n", flush=True)

        # A timed wait returns to Python code often, so the signal handlers run promptly.
        while not stop_requested.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
