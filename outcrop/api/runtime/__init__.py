"""The Bedrock runtime surface: invoke, streams, converse, count-tokens."""
