"""The boto3 ``bedrock-agent`` surface (Prompt management), on the same port as the other Bedrock APIs."""
