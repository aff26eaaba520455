"""The blocks API, for admin keys only: ``GET /v1/blocks``, ``POST /v1/blocks``,
``DELETE /v1/blocks/{id}`` (placed and lifted through :class:`~.blocks.BlockService`).
Mounted by :func:`~.app.create_app`.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from .auth import authenticate
from .blocks import (
    ENDED_LISTED,
    MAX_ENDED_LISTED,
    BlockLimitReached,
    BlockService,
    InvalidBlock,
    block_from_json,
    block_warnings,
    parse_block_id,
)
from .errors import ApiError, int_param
from .ingest import parse_json, read_body
from .storage import Storage

__all__ = ["create_block_endpoint", "delete_block_endpoint", "list_blocks_endpoint"]


async def list_blocks_endpoint(request: Request) -> JSONResponse:
    await authenticate(request, admin=True)
    storage: Storage = request.app.state.storage
    include = request.query_params.get("all", "") in ("1", "true", "yes")
    limit = int_param(request, "limit", 1, MAX_ENDED_LISTED) or ENDED_LISTED
    blocks = await run_in_threadpool(lambda: storage.list_blocks(ended=limit if include else 0))
    actions = await run_in_threadpool(storage.action_set)
    return JSONResponse(
        {"version": actions.version, "blocks": [b.to_json(actions.now) for b in blocks]}
    )


async def create_block_endpoint(request: Request) -> JSONResponse:
    key = await authenticate(request, admin=True)
    body = parse_json(await read_body(request, 64 * 1024))
    try:
        wanted = block_from_json(body)
    except InvalidBlock as exc:
        raise ApiError(400, str(exc), field=exc.field) from None
    blocks: BlockService = request.app.state.blocks
    try:
        placed = await run_in_threadpool(
            lambda: blocks.apply(wanted, created_by=f"api-key:{key.id}:{key.name}")
        )
    except BlockLimitReached as exc:
        raise ApiError(409, str(exc), field=exc.field) from None
    # 201 for a new block; 200 for the active block on the same target, extended or kept.
    created = placed.outcome == "created"
    block = placed.block
    now = block.created_at if created else blocks.store.now()
    body = {**block.to_json(now), "outcome": placed.outcome, "warnings": block_warnings(wanted)}
    return JSONResponse(body, status_code=201 if created else 200)


async def delete_block_endpoint(request: Request) -> JSONResponse:
    key = await authenticate(request, admin=True)
    block_id = parse_block_id(request.path_params["block_id"])
    if block_id is None:
        raise ApiError(404, "no such block")
    blocks: BlockService = request.app.state.blocks
    block = await run_in_threadpool(
        lambda: blocks.lift(block_id, lifted_by=f"api-key:{key.id}:{key.name}")
    )
    if block is None:
        raise ApiError(404, "no active block with this id")
    return JSONResponse(block.to_json(blocks.store.now()))
