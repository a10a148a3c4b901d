"""SageMaker-compatible endpoints: control plane records, runtime targets, payloads, processing."""
