"""A gateway's checks before it computes: nothing is launched unless every one passes.

Verified before anything the request names is fetched: the agreement is for one of this gateway's
published assets, exists on chain with this service's terms, its payment is locked and its compute
condition open, with time locks and a time-out that let the provider be paid. Only then the workflow DDO
(registered by the consumer, matching its on-chain checksum, asking this provider for what its service
runs) and what it names; last, the time left on the compute condition must cover the session. Each refusal
is a :class:`Refusal` whose HTTP status and detail name what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from airflow_nevermined_fl import ddo
from airflow_nevermined_fl.contracts.errors import ChainError, InvalidInputError
from airflow_nevermined_fl.contracts.keeper import ComputeAgreement, StateError, UnknownAgreementError
from airflow_nevermined_fl.contracts.timeouts import blocks_needed
from airflow_nevermined_fl.gateway.config import Service
from airflow_nevermined_fl.gateway.policy import PolicyError, check_workflow
from airflow_nevermined_fl.gateway.publish import load_assets, policy_checksum
from airflow_nevermined_fl.gateway.resources import FetchError, Provider
from airflow_nevermined_fl.gateway.workloads import (
    CoordinatorPlan,
    ParticipantPlan,
    module_of,
    session_prefix,
)
from airflow_nevermined_fl.protocol.announce import AnnouncementError, agreement_of, verify
from airflow_nevermined_fl.protocol.policy import check_coordinator
from airflow_nevermined_fl.runtime.config import SeatSpec, strategy_spec

PARAMETERS = (
    "sessionId",
    "rounds",
    "epochs",
    "minParticipants",
    "participantsRatio",
    "model",
    "heartbeat",
    "sessionTimeout",
    "participants",
)
MAX_MODEL = 500_000_000
NOT_PUBLISHED = "not published: run `nvfl gateway publish`"


class Refusal(Exception):
    """A request the gateway refuses: HTTP ``status`` and a ``detail`` naming what is wrong."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Offer:
    """A configured service, its published asset (None: not published as configured), why it is not ready."""

    service: Service
    asset: dict[str, Any] | None
    reason: str | None


@dataclass(frozen=True)
class Order:
    """A compute request that passed every check: what to launch, for which agreement."""

    service: Service
    did: str
    agreement: ComputeAgreement
    workflow_did: str
    session_id: str
    plan: CoordinatorPlan | ParticipantPlan


def offers(provider: Provider) -> list[Offer]:
    """Every configured service with its published asset and readiness."""
    assets = {a["name"]: a for a in load_assets(provider.config)}
    result = []
    for service in provider.config.services:
        asset = assets.get(service.name)
        published = (service.type, service.price, policy_checksum(service))
        if asset is None or (asset["type"], asset["price"], asset.get("policy")) != published:
            result.append(Offer(service, None, NOT_PUBLISHED))
        elif service.dataset and not provider.dataset_present(service):
            result.append(Offer(service, asset, "dataset missing or unreadable"))
        else:
            result.append(Offer(service, asset, None))
    return result


def parse_request(agreement_id: str, body: Any) -> tuple[dict[str, Any], str]:
    """The body's agreement and workflow DID, its agreement id the path's (400 otherwise)."""
    if not isinstance(body, dict) or not isinstance(body.get("agreement"), dict):
        raise Refusal(400, 'body: expected {"workflow_did": "did:nv:...", "agreement": {...}}')
    if not isinstance(body.get("workflow_did"), str):
        raise Refusal(400, "body.workflow_did: expected a DID string")
    if body["agreement"].get("agreement_id") != agreement_id:
        raise Refusal(
            400, f"agreement id in the path ({agreement_id}) differs from the body's agreement.agreement_id"
        )
    return body["agreement"], body["workflow_did"]


def check_execute(provider: Provider, caller: str, agreement_id: str, body: Any) -> Order:
    """Every check before a launch, in order; :class:`Refusal` at the first that fails."""
    terms, workflow_did = parse_request(agreement_id, body)
    if str(terms.get("consumer", "")).lower() != caller.lower():
        raise Refusal(403, f"signer {caller} is not the agreement's consumer {terms.get('consumer')}")
    did = str(terms.get("did", "")).lower()
    offer = next((o for o in offers(provider) if o.asset and o.asset["did"] == did), None)
    if offer is None:
        raise Refusal(403, f"agreement for another provider's asset: {did} is not published by this gateway")
    if offer.reason:
        raise Refusal(503, f"service {offer.service.name} is not ready: {offer.reason}")
    amount = _base_units(provider, offer.service.price)
    agreement = _verified_agreement(provider, terms, caller, did, amount)  # before any fetch
    doc = verified_ddo(provider, workflow_did, caller, "workflow")
    _allowed(provider, offer.service, workflow_did, doc)
    if offer.service.type == "fl-coordinator":
        session_id, plan = _coordinator_plan(provider, caller, workflow_did, doc, agreement.agreement_id)
    else:
        session_id, plan = _participant_plan(provider, caller, workflow_did, doc, did, offer.service)
    needed = blocks_needed(plan.session_timeout, provider.config.block_time)
    _verified_agreement(provider, terms, caller, did, amount, needed)  # the time left, now known
    return Order(offer.service, did, agreement, workflow_did, session_id, plan)


def _base_units(provider: Provider, price: str) -> int:
    try:
        return provider.keeper.token.base(price, "price")
    except ChainError as exc:
        raise Refusal(502, f"chain: {exc}") from None


def _verified_agreement(
    provider: Provider,
    terms: dict[str, Any],
    caller: str,
    did: str,
    amount: int | None,
    blocks_left: int = 1,
) -> ComputeAgreement:
    """The agreement of ``caller`` on ``did``, verified on chain to pay ``amount`` base units to this
    provider (None: to whoever provides ``did``) and to have ``blocks_left`` blocks before its time-out."""
    try:
        return provider.keeper.verify_compute_agreement(
            terms, consumer=caller, did=did, amount=amount, min_blocks_left=blocks_left
        )
    except UnknownAgreementError as exc:
        raise Refusal(404, str(exc)) from None
    except InvalidInputError as exc:
        raise Refusal(403, str(exc)) from None
    except StateError as exc:
        raise Refusal(409, str(exc)) from None
    except ChainError as exc:
        raise Refusal(502, f"chain: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise Refusal(400, f"agreement: malformed ({exc})") from None


def verified_ddo(provider: Provider, did: str, owner: str | None, what: str) -> dict[str, Any]:
    """The DDO registered for ``did`` (by ``owner`` unless None), fetched from its registered URL and
    matching the checksum registered on chain."""
    try:
        record = provider.keeper.get_did(did)
    except InvalidInputError as exc:
        raise Refusal(404, f"{what} {did}: {exc}") from None
    except ChainError as exc:
        raise Refusal(502, f"chain: {exc}") from None
    if owner is not None and record.owner.lower() != owner.lower():
        raise Refusal(403, f"{what} {did} is registered by {record.owner}, not by the consumer {owner}")
    try:
        doc = json.loads(provider.read(record.url))
    except (FetchError, ValueError) as exc:
        raise Refusal(502, f"{what} {did}: DDO unavailable at its registered URL: {exc}") from None
    if not ddo.is_registered(doc, record.did, record.checksum):
        raise Refusal(
            409, f"{what} DDO checksum mismatch: the DDO of {did} is not the one registered on chain"
        )
    return doc


def _content(did: str, check: Any, detail: str) -> None:
    if not check:
        raise Refusal(409, f"workflow {did}: {detail}")


def _malformed(did: str, exc: Exception) -> Refusal:
    return Refusal(409, f"workflow {did}: malformed DDO ({type(exc).__name__}: {exc})")


def _for_me(
    provider: Provider, did: str, main: dict[str, Any], kind: str, entrypoint: str, module: str
) -> None:
    _content(
        did, main.get("type") == kind, f"type {main.get('type')!r}, this service runs {kind!r} workflows"
    )
    _content(
        did,
        str(main.get("provider", "")).lower() == provider.address.lower(),
        f"names provider {main.get('provider')}, not this gateway's {provider.address}",
    )
    _content(did, module_of(entrypoint) == module, f"runs {entrypoint!r}; this service runs {module}")


def _allowed(
    provider: Provider,
    service: Service,
    did: str,
    doc: dict[str, Any],
    parameters: dict[str, Any] | None = None,
) -> None:
    """The workflow within the service's policy (409 naming the rule): its image and model and, with the
    session's ``parameters`` (a participant's: its coordinator's), the session's bounds."""
    try:
        main = ddo.main_block(doc)
        if main.get("type") == "fl-coordinator":
            container, parameters = main["workflow"]["coordinator"], main["parameters"]
            model = parameters["model"]
        else:
            stage = main["workflow"]["stages"][0]
            container, model = stage["requirements"]["container"], stage["transformation"]["model"]
        check_workflow(service.policy, provider.config.backend, container, model, parameters)
    except PolicyError as err:
        raise Refusal(409, f"workflow {did}: refused by the policy of {service.name}: {err}") from None
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise _malformed(did, exc) from None


def _coordinator_plan(
    provider: Provider, caller: str, did: str, doc: dict[str, Any], agreement_id: str
) -> tuple[str, CoordinatorPlan]:
    try:
        main = ddo.main_block(doc)
        container = main["workflow"]["coordinator"]
        _for_me(provider, did, main, "fl-coordinator", container["entrypoint"], ddo.COORDINATOR_MODULE)
        parameters = main["parameters"]
        missing = [name for name in PARAMETERS if name not in parameters]
        _content(did, not missing, f"parameters lack {missing}")
        _content(
            did, isinstance(parameters["model"], dict) and "name" in parameters["model"], "model: no name"
        )
        strategy_spec(parameters.get("strategy"), "parameters.strategy")  # ConfigError names the field
        initial = initial_model(provider, caller, parameters.get("initialModel"))
        seats = _seats(provider, did, parameters["participants"])
        plan = CoordinatorPlan(container, parameters, initial, seats, session_prefix(agreement_id))
        return str(parameters["sessionId"]), plan
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise _malformed(did, exc) from None


def _seats(provider: Provider, did: str, assets: Any) -> tuple[SeatSpec, ...]:
    """The seats of a session's data providers: each listed participant asset's provider address and
    declared dataset rows, from its DDO as registered on chain by that provider (its on-chain owner: the
    DDO's ``provider`` field alone is whatever its registrant wrote)."""
    _content(did, isinstance(assets, list) and assets, "participants: expected a list of asset DIDs")
    seats = {}
    for asset in assets:
        main = ddo.main_block(verified_ddo(provider, str(asset), None, "participant asset"))
        kind = main["service"]["type"]
        _content(did, kind == "fl-participant", f"participant {asset} is an {kind!r} asset")
        address = str(main["provider"]).lower()
        owner = _owner(provider, str(asset)).lower()
        _content(
            did,
            owner == address,
            f"participant {asset} names provider {address} but is registered by {owner}",
        )
        seats[address] = SeatSpec(address, int(main["dataset"]["rows"]))
    _content(did, len(seats) == len(assets), "participants: one asset per data provider")
    return tuple(seats.values())


def _owner(provider: Provider, did: str) -> str:
    """The on-chain owner of ``did``."""
    try:
        return provider.keeper.get_did(did).owner
    except InvalidInputError as exc:
        raise Refusal(404, f"{did}: {exc}") from None
    except ChainError as exc:
        raise Refusal(502, f"chain: {exc}") from None


def _participant_plan(
    provider: Provider, caller: str, did: str, doc: dict[str, Any], asset_did: str, service: Service
) -> tuple[str, ParticipantPlan]:
    try:
        main = ddo.main_block(doc)
        stage = main["workflow"]["stages"][0]
        container = stage["requirements"]["container"]
        _for_me(provider, did, main, "workflow", container["entrypoint"], ddo.PARTICIPANT_MODULE)
        data = stage["input"][0]["id"]
        _content(
            did, str(data).lower() == asset_did, f"trains on {data}, not on this gateway's asset {asset_did}"
        )
        coordinator_did = stage["transformation"]["id"]
        coordinator = verified_ddo(provider, coordinator_did, caller, "coordinator workflow")
        coordinator_main = ddo.main_block(coordinator)
        kind = coordinator_main.get("type")
        _content(did, kind == "fl-coordinator", f"its coordinator {coordinator_did} is of type {kind!r}")
        parameters = coordinator_main["parameters"]
        _allowed(provider, service, did, doc, parameters)
        session_id = str(parameters["sessionId"])
        output = stage.get("output", {}).get("sessionId")
        _content(did, output == session_id, f"session {output!r} is not its coordinator's {session_id!r}")
        info = coordinator["service"][0]["attributes"].get("additionalInformation") or {}
        if "coordinatorAnnouncement" not in info:
            raise Refusal(
                409, f"coordinator not announced yet: {coordinator_did} has no coordinatorAnnouncement"
            )
        announced = _legitimate_coordinator(
            provider, service, caller, info["coordinatorAnnouncement"], session_id
        )
        plan = ParticipantPlan(
            container=container,
            session_id=session_id,
            coordinator_url=announced["url"],
            coordinator_cert=announced["tls_cert"],
            model=stage["transformation"]["model"],
            heartbeat=float(parameters["heartbeat"]),
            session_timeout=float(parameters["sessionTimeout"]),
            rounds=int(parameters["rounds"]),
            dataset=str(service.dataset),
            proximal_mu=strategy_spec(parameters.get("strategy"), "parameters.strategy").options.get("mu"),
        )
        return session_id, plan
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise _malformed(did, exc) from None


def _legitimate_coordinator(
    provider: Provider, service: Service, caller: str, announcement: Any, session_id: str
) -> dict[str, Any]:
    """The announcement of a coordinator the caller pays for: the agreement it names is the caller's,
    locked and open on chain, on a published ``fl-coordinator`` asset whose on-chain owner (not the
    caller, and one the service's policy lists) signed the announcement for this session and that
    agreement (409 otherwise). Checked on chain before the asset's DDO is fetched."""

    def refused(detail: str) -> Refusal:
        return Refusal(409, f"coordinator announcement refused: {detail}")

    try:
        terms = agreement_of(announcement)
    except AnnouncementError as exc:
        raise refused(str(exc)) from None
    did = str(terms.get("did", ""))
    try:
        _verified_agreement(provider, terms, caller, did, None)
        owner = provider.keeper.get_did(did).owner
    except Refusal as exc:
        raise refused(f"its agreement: {exc.detail}") from None
    except (InvalidInputError, ChainError) as exc:
        raise refused(f"its asset {did}: {exc}") from None
    if owner.lower() == caller.lower():
        raise refused(
            f"the consumer {caller} owns the coordinator asset {did}: it cannot be its own coordinator"
        )
    try:
        check_coordinator(service.policy, owner)
    except PolicyError as err:
        raise refused(str(err)) from None
    asset = ddo.main_block(verified_ddo(provider, did, owner, "coordinator asset"))
    service = asset.get("service") or {}
    if (asset.get("type"), service.get("type")) != ("compute", "fl-coordinator"):
        raise refused(f"{did} is not a published fl-coordinator asset")
    try:
        return verify(announcement, provider=owner, session_id=session_id)
    except AnnouncementError as exc:
        raise refused(str(exc)) from None


def initial_model(provider: Provider, caller: str, initial: Any) -> str | None:
    """Warm start: only from a model DID the caller registered, resolved to its file (its sha256
    verified); never a raw URL, which this gateway would read with its own storage credentials."""
    if initial in (None, ""):
        return None
    if not isinstance(initial, str) or not initial.startswith("did:nv:"):
        raise Refusal(409, f"initialModel: expected a model DID (did:nv:...), got {initial!r}")
    main = ddo.main_block(verified_ddo(provider, initial, caller, "initial model"))
    if main.get("type") != "model":
        raise Refusal(409, f"initialModel: {initial} is a {main.get('type')!r} asset, not a model")
    model_file = main["files"][0]
    try:
        digest = hashlib.sha256(provider.read(model_file["url"], MAX_MODEL)).hexdigest()
    except FetchError as exc:
        raise Refusal(502, f"initial model {initial}: {exc}") from None
    if "0x" + digest != model_file["checksum"]:
        raise Refusal(409, f"initial model {initial}: model file checksum mismatch")
    return model_file["url"]
