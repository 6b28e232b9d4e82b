"""The consumer's client of a provider gateway: public ``info``/``ddo``, signed compute calls.

``sign`` is the consumer's EIP-191 signer (``Keeper.sign_message``): the key itself never reaches this
module. Every signature binds the gateway it is for: ``chain_id`` (the chain the consumer's own keeper is
on), ``audience`` (the gateway's provider address, from its asset DDO) and ``endpoint`` (its URL), with
the method, path and query of the request (:mod:`.auth`).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx

from airflow_nevermined_fl.protocol import API
from airflow_nevermined_fl.protocol.auth import Audience, canonical_query, signed_headers

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""Every gateway call: 5 s to connect, 30 s for each read, write and pool wait."""


class GatewayError(RuntimeError):
    """A gateway call failed: unreachable (``status_code`` None) or answered an error."""

    def __init__(self, endpoint: str, status_code: int | None, detail: Any) -> None:
        super().__init__(
            f"gateway {endpoint}: " + (f"HTTP {status_code}: {detail}" if status_code else detail)
        )
        self.endpoint = endpoint
        self.status_code = status_code
        self.detail = detail


def _answer(endpoint: str, response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except (ValueError, AttributeError):
            detail = response.text
        raise GatewayError(endpoint, response.status_code, detail)
    try:
        return response.json()
    except ValueError:
        call = f"{response.request.method} {response.request.url.path}"
        raise GatewayError(endpoint, response.status_code, f"{call}: the answer is not JSON") from None


def _lost(endpoint: str, call: str, exc: httpx.HTTPError, timeout: httpx.Timeout | float) -> GatewayError:
    """The :class:`GatewayError` (no status: no answer) of a transport failure of ``call``."""
    limits = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
    bound = {
        httpx.ConnectTimeout: ("no connection within", limits.connect),
        httpx.ReadTimeout: ("no answer within", limits.read),
        httpx.WriteTimeout: ("could not send within", limits.write),
        httpx.PoolTimeout: ("no free connection within", limits.pool),
    }.get(type(exc))
    what = f"unreachable: {bound[0]} {bound[1]:g} s" if bound and bound[1] is not None else "unreachable"
    detail = f": {exc}" if str(exc) else ""
    return GatewayError(endpoint, None, f"{call}: {what}: {type(exc).__name__}{detail}")


class GatewayClient:
    """Calls to one gateway at ``endpoint`` (``http(s)://host:port``), each bounded by ``timeout``
    (default :data:`TIMEOUT`); a gateway that cannot be reached or does not answer in time is a
    :class:`GatewayError` without status code naming the gateway and the call."""

    def __init__(
        self,
        endpoint: str,
        audience: str,
        address: str | None = None,
        sign: Callable[[str], str] | None = None,
        ca_file: str | None = None,
        timeout: httpx.Timeout | float = TIMEOUT,
        chain_id: int | None = None,
    ) -> None:
        if sign is not None and chain_id is None:
            raise ValueError("chain_id: required to sign requests (the chain the consumer pays on)")
        self.endpoint = endpoint.rstrip("/")
        self.audience = audience
        self.chain_id = chain_id
        self.address = address
        self._sign = sign
        self._verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"GatewayClient({self.endpoint!r})"

    def _prepare(
        self, method: str, path: str, payload: Any, params: dict[str, Any] | None = None
    ) -> tuple[str, bytes, dict[str, str]]:
        """The request's URL (its query canonical: what is signed is what is sent), body and headers."""
        body = json.dumps(payload).encode() if payload is not None else b""
        query = canonical_query(params or {})
        headers: dict[str, str] = {}
        if self._sign is not None and self.address is not None and self.chain_id is not None:
            audience = Audience(self.chain_id, self.audience, self.endpoint)
            headers = signed_headers(self._sign, self.address, method, path, audience, body, query)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        return self.endpoint + path + (f"?{query}" if query else ""), body, headers

    def request(
        self, method: str, path: str, payload: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        url, body, headers = self._prepare(method, path, payload, params)
        try:
            with httpx.Client(verify=self._verify, timeout=self._timeout) as http:
                response = http.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise _lost(self.endpoint, f"{method} {path}", exc, self._timeout) from None
        return _answer(self.endpoint, response)

    async def arequest(self, method: str, path: str, payload: Any = None) -> Any:
        url, body, headers = self._prepare(method, path, payload)
        try:
            async with httpx.AsyncClient(verify=self._verify, timeout=self._timeout) as http:
                response = await http.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise _lost(self.endpoint, f"{method} {path}", exc, self._timeout) from None
        return _answer(self.endpoint, response)

    # -- public ---------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Provider address, services (asset DID, type, price, ready), backend, capacity, version."""
        return self.request("GET", f"{API}/info")

    def ddo(self, did: str) -> dict[str, Any]:
        """The asset DDO the gateway publishes for ``did``."""
        return self.request("GET", f"{API}/ddo/{did}")

    # -- signed, per agreement ------------------------------------------------------------------------------

    def execute(self, agreement: dict[str, Any], workflow_did: str) -> dict[str, Any]:
        """Start (or find) the execution of ``agreement`` (a ``ComputeAgreement`` dict) for
        ``workflow_did``."""
        path = f"{API}/compute/execute/{agreement['agreement_id']}"
        return self.request("POST", path, {"workflow_did": workflow_did, "agreement": agreement})

    def status(self, agreement_id: str) -> dict[str, Any]:
        return self.request("GET", f"{API}/compute/status/{agreement_id}")

    async def astatus(self, agreement_id: str) -> dict[str, Any]:
        return await self.arequest("GET", f"{API}/compute/status/{agreement_id}")

    def logs(self, agreement_id: str, tail: int = 100) -> str:
        return self.request("GET", f"{API}/compute/logs/{agreement_id}", params={"tail": tail})["logs"]

    def _follow(self, agreement_id: str, idle_timeout: float | None) -> tuple[str, dict[str, Any]]:
        """The signed request of a logs stream: its URL and ``httpx`` arguments (connecting bounded like
        every call; the wait for the next line by ``idle_timeout``, unbounded when None)."""
        path = f"{API}/compute/logs/{agreement_id}"
        url, _, headers = self._prepare("GET", path, None, {"follow": "true"})
        base = self._timeout if isinstance(self._timeout, httpx.Timeout) else httpx.Timeout(self._timeout)
        timeout = httpx.Timeout(connect=base.connect, read=idle_timeout, write=base.write, pool=base.pool)
        return url, {"headers": headers, "timeout": timeout}

    def follow_logs(self, agreement_id: str, idle_timeout: float | None = None) -> Iterator[str]:
        """The workload's log lines as they are written, until it ends. A silent workload writes nothing
        for long, so the wait for the next line is unbounded unless ``idle_timeout`` (s) is given."""
        url, kwargs = self._follow(agreement_id, idle_timeout)
        try:
            with (
                httpx.Client(verify=self._verify) as http,
                http.stream("GET", url, **kwargs) as response,
            ):
                if response.status_code >= 400:
                    response.read()
                    _answer(self.endpoint, response)
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise _lost(
                self.endpoint, f"GET {url.removeprefix(self.endpoint)}", exc, kwargs["timeout"]
            ) from None

    async def afollow_logs(self, agreement_id: str, idle_timeout: float | None = None) -> AsyncIterator[str]:
        """:meth:`follow_logs` for an event loop (the triggerer)."""
        url, kwargs = self._follow(agreement_id, idle_timeout)
        try:
            async with (
                httpx.AsyncClient(verify=self._verify) as http,
                http.stream("GET", url, **kwargs) as response,
            ):
                if response.status_code >= 400:
                    await response.aread()
                    _answer(self.endpoint, response)
                async for line in response.aiter_lines():
                    yield line
        except httpx.HTTPError as exc:
            raise _lost(
                self.endpoint, f"GET {url.removeprefix(self.endpoint)}", exc, kwargs["timeout"]
            ) from None

    def stop(self, agreement_id: str) -> dict[str, Any]:
        return self.request("POST", f"{API}/compute/stop/{agreement_id}")
