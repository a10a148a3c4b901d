"""The SageMaker surfaces: control plane (JSON 1.1 on POST /) and runtime (/endpoints/...)."""
