"""An operator's opt-out after the fact: ``Ven.opt_out`` sends ``oadrCreateOpt`` to a real ScriptedVtn
over loopback, and the VEN's own answer to later re-deliveries follows it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from gateway.clock import SystemClock
from gateway.exceptions import AdapterUnavailable, ProtocolError
from gateway.ven import Ven
from gateway.ven.oadr20b.opt import OPT_OUT_REASON
from simulators.vtn import ScriptedVtn, VenOpt
from tests.gateway.ven.test_ven_vtn import VEN_ID, RecordingHandler, config, dispatch, soon

REASON = "operator opt-out: cooling maintenance"


@pytest.fixture
async def vtn() -> AsyncIterator[ScriptedVtn]:
    async with ScriptedVtn(poll_interval_s=1.0) as server:
        yield server


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
async def ven(vtn: ScriptedVtn, handler: RecordingHandler) -> AsyncIterator[Ven]:
    async with Ven(config(vtn, request_timeout_s=1.0), handler, SystemClock(), resync_every_polls=0) as client:
        yield client


async def opted_in(vtn: ScriptedVtn, **options: Any) -> str:
    event_id = dispatch(vtn, **options)
    assert (await vtn.wait_for_response(event_id)).opt_type == "optIn"
    return event_id


@pytest.mark.integration
async def test_the_vtn_records_the_opt_out_and_a_redelivery_is_answered_opt_out(
        vtn: ScriptedVtn, ven: Ven, handler: RecordingHandler) -> None:
    event_id = await opted_in(vtn)

    await ven.opt_out(event_id, 0, REASON)

    (opt,) = vtn.opts
    assert opt == VenOpt(VEN_ID, event_id, 0, "optOut", "overrideStatus", opt.opt_id) and opt.opt_id
    assert OPT_OUT_REASON == "overrideStatus"
    other = dispatch(vtn, start=soon(30))  # the new distribution lists the opted-out event again, same version
    await vtn.wait_for_response(other)
    assert [r.opt_type for r in vtn.responses if r.event_id == event_id] == ["optIn", "optOut"]
    assert [r.description for r in vtn.response_details if r.event_id == event_id][-1] == REASON
    assert len(handler.seen(event_id)) == 1  # answered from memory, the handler is not asked again


@pytest.mark.integration
async def test_an_opt_out_of_a_superseded_modification_is_refused_and_nothing_is_sent(
        vtn: ScriptedVtn, ven: Ven) -> None:
    event_id = await opted_in(vtn)
    vtn.modify_event(event_id, intervals=[(timedelta(minutes=45), 300.0)])
    assert (await vtn.wait_for_response(event_id, modification=1)).opt_type == "optIn"

    with pytest.raises(ProtocolError, match=f"VTN has since sent modification 1.*{event_id}"):
        await ven.opt_out(event_id, 0, REASON)
    assert vtn.opts == []
    await ven.opt_out(event_id, 1, REASON)
    assert [(o.event_id, o.modification) for o in vtn.opts] == [(event_id, 1)]


async def test_an_opt_out_before_registration_says_so(vtn: ScriptedVtn, handler: RecordingHandler) -> None:
    ven = Ven(config(vtn), handler, SystemClock())
    with pytest.raises(AdapterUnavailable, match=r"not registered with http://127\.0\.0\.1.*start it"):
        await ven.opt_out("evt-1", 0, REASON)
    assert vtn.opts == []


@pytest.mark.integration
async def test_with_the_vtn_down_the_opt_out_fails_clearly_and_the_site_stays_out(
        vtn: ScriptedVtn, ven: Ven) -> None:
    event_id = await opted_in(vtn)
    port = int(vtn.vtn_url.split(":")[2].split("/")[0])
    await vtn.stop()

    with pytest.raises(AdapterUnavailable, match=r"no usable answer from the VTN at .*retry, or tell the utility"):
        await ven.opt_out(event_id, 0, REASON)

    async with ScriptedVtn(poll_interval_s=1.0, port=port) as back:  # the VTN returns and distributes it again
        dispatch(back, event_id=event_id)
        response = await back.wait_for_response(event_id)
    assert (response.modification, response.opt_type, response.description) == (0, "optOut", REASON)


@pytest.mark.integration
async def test_a_vtn_refusal_is_a_protocol_error(vtn: ScriptedVtn, ven: Ven) -> None:
    with pytest.raises(ProtocolError, match="refused the opt-out of event evt-unknown modification 0: 452"):
        await ven.opt_out("evt-unknown", 0, REASON)  # an event this VTN never sent
    assert vtn.opts == []


@pytest.mark.integration
async def test_openleadrs_stub_answer_is_not_an_acknowledgement(vtn: ScriptedVtn, ven: Ven) -> None:
    event_id = await opted_in(vtn)
    service = vtn.server.services["opt_service"]
    service.handlers["oadrCreateOpt"] = service.create_opt  # openleadr's stub (`pass`): a bare oadrResponse, 200
    with pytest.raises(ProtocolError, match=r"did not acknowledge .* answered oadrResponse without our optID"):
        await ven.opt_out(event_id, 0, REASON)


@pytest.mark.integration
async def test_a_vtn_that_does_not_answer_is_given_up_after_the_request_timeout(vtn: ScriptedVtn, ven: Ven) -> None:
    event_id = await opted_in(vtn)
    release = asyncio.Event()

    async def hang(payload: dict[str, Any]) -> None:
        await release.wait()

    vtn.server.services["opt_service"].handlers["oadrCreateOpt"] = hang
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        with pytest.raises(AdapterUnavailable, match="no usable answer"):
            await ven.opt_out(event_id, 0, REASON)
        assert 0.9 <= loop.time() - began < 2.0  # request_timeout_s is 1 s
    finally:
        release.set()
