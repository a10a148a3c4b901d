"""The Bedrock control-plane and runtime surfaces."""
