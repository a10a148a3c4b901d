"""A small HTTP client for the CLI: the Bedrock control plane and the admin API of a running server."""

from __future__ import annotations

import difflib
from typing import Any

import httpx

from outcrop.errors import OutcropError, ServiceUnavailableError


class ServerError(OutcropError):
    """Raised when the server answers with an error; the message is the server's."""


def did_you_mean(name: str, known: list[str]) -> str:
    """' Did you mean 'x'?' for the closest of ``known`` to ``name`` (difflib), or ''."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


class Client:
    def __init__(
        self, endpoint: str, api_key: str | None = None, timeout: float = 600.0, key_source: str = ""
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.key_source = key_source
        """Where the API key came from, told when the server refuses it ('' when unknown)."""
        self.auth_headers: dict[str, str] = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        """The headers that authorise a request as this client (empty without an API key)."""
        self._http = httpx.Client(base_url=self.endpoint, timeout=timeout, headers=self.auth_headers)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ServiceUnavailableError(
                f"No Outcrop server answers at {self.endpoint}. Start one with `outcrop serve`, "
                "or point --endpoint / OUTCROP_ENDPOINT at it."
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(f"Request to {self.endpoint}{path} failed: {exc}") from None
        if response.status_code >= 300:
            kind = (
                response.headers.get("x-amzn-errortype", "").split(":")[0] or f"HTTP {response.status_code}"
            )
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text
            if response.status_code in (401, 403) and "API key is not valid" in message and self.key_source:
                message = f"{message} The CLI used {self.key_source}."
            raise ServerError(f"{kind}: {message}", kind=kind)
        return response.json() if response.content else {}

    def _model_call(self, identifier: str | list[str], method: str, path: str, **kwargs: Any) -> Any:
        """A call that names models: an unknown name gets the closest names this key may see."""
        try:
            return self._call(method, path, **kwargs)
        except ServerError as exc:
            asked = [identifier] if isinstance(identifier, str) else identifier
            asked = [a for a in asked if a and not a.startswith("arn:")]
            if exc.fields.get("kind") != "ResourceNotFoundException" or not asked:
                raise
            try:
                names = [m["modelName"] for m in self.list_models()]
            except OutcropError:
                raise exc from None
            hint = next((h for a in asked if a not in names and (h := did_you_mean(a, names))), "")
            if not hint:
                raise
            raise ServerError(exc.message + hint, kind="ResourceNotFoundException") from None

    def create_import_job(self, **body: Any) -> str:
        return str(self._call("POST", "/model-import-jobs", json=body)["jobArn"])

    def import_job_detail(self, identifier: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/outcrop/import-jobs/{identifier}"))

    def list_import_jobs(self) -> list[dict[str, Any]]:
        return list(
            self._call("GET", "/model-import-jobs", params={"sortOrder": "Descending"})[
                "modelImportJobSummaries"
            ]
        )

    def list_models(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/imported-models")["modelSummaries"])

    def model_detail(self, identifier: str) -> dict[str, Any]:
        return dict(self._model_call(identifier, "GET", f"/outcrop/models/{identifier}"))

    def delete_model(self, identifier: str) -> None:
        self._model_call(identifier, "DELETE", f"/imported-models/{identifier}")

    def warm(self, identifier: str, copies: int) -> list[dict[str, Any]]:
        return list(
            self._model_call(
                identifier, "POST", f"/outcrop/models/{identifier}/warm", json={"copies": copies}
            )["copies"]
        )

    def copies(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/outcrop/copies")["copies"])

    def create_key(self, name: str, policy: str | dict[str, Any], models: list[str]) -> dict[str, Any]:
        body = {"name": name, "policy": policy, "models": models}
        return dict(self._model_call(models, "POST", "/outcrop/keys", json=body))

    def list_keys(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/outcrop/keys")["keys"])

    def delete_key(self, name: str) -> None:
        self._call("DELETE", f"/outcrop/keys/{name}")

    def rotate_key(self, name: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/outcrop/keys/{name}/rotate"))

    def create_batch_job(self, **body: Any) -> str:
        return str(
            self._model_call(str(body.get("modelId", "")), "POST", "/model-invocation-job", json=body)[
                "jobArn"
            ]
        )

    def batch_job(self, identifier: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/model-invocation-job/{identifier}"))

    def list_batch_jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        params = {"sortOrder": "Descending", **({"statusEquals": status} if status else {})}
        return list(self._call("GET", "/model-invocation-jobs", params=params)["invocationJobSummaries"])

    def stop_batch_job(self, identifier: str) -> None:
        self._call("POST", f"/model-invocation-job/{identifier}/stop")

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/health"))
