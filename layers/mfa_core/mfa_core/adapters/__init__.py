"""Adapters to AWS services other than DynamoDB: KMS, Secrets Manager, SSM."""
