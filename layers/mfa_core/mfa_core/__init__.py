"""Domain logic of the MFA service: the Lambda handlers stay thin and call into this package."""
