"""Run the MFA service on one machine: moto replaces AWS and an HTTP server replaces API Gateway."""
