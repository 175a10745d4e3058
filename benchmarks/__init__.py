"""Performance measurements of the service: AWS requests per operation, cold init of each
function, and CPU per verification with a TOTP code or a security key. Run them with
`make bench` or `python -m benchmarks.run`.
"""
