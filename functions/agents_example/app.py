"""An example backend behind the MFA authorizer, in place of the control plane's agent API.

It returns the agent id and the caller that the authorizer described, and changes nothing.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from mfa_core import http
from mfa_core.errors import ConfigurationError

logger = Logger()
app = APIGatewayHttpResolver()
http.install(app)

# The authorizer context fields that the example returns.
CALLER_FIELDS = ("sub", "org", "sid", "acr", "amr", "mfa_time", "roles")


@app.put("/v1/agents/<agent_id>/config")
def update_config(agent_id: str) -> Response[str]:
    return _echo(agent_id, "config")


@app.post("/v1/agents/<agent_id>/credentials")
def issue_credentials(agent_id: str) -> Response[str]:
    return _echo(agent_id, "credentials")


def _echo(agent_id: str, operation: str) -> Response[str]:
    context = app.current_event.request_context.authorizer.get_lambda or {}
    if "sub" not in context:
        # A route deployed without the authorizer must not run as if someone were signed in.
        raise ConfigurationError("the route has no authorizer context; attach MfaAuthorizer")
    caller = {name: context[name] for name in CALLER_FIELDS if name in context}
    logger.info(
        "Agent request accepted",
        extra={"org_id": caller.get("org"), "user_id": caller.get("sub"), "agent_id": agent_id},
    )
    return http.json_response({"agent_id": agent_id, "operation": operation, "caller": caller})


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
