"""Performance measurements of the service: AWS requests per operation, cold init of each
function, and CPU per TOTP verification. Run them with `make bench` or `python -m benchmarks.run`.
"""
