"""Downloads of the local storage backend: signed, expiring links (or public ones if configured)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from ghostouch.api.errors import error_responses
from ghostouch.api.state import ApiState, get_state
from ghostouch.storage import LinkError, LinkExpired, LocalObjectStore, ObjectNotFound, is_valid_key

router = APIRouter(tags=["downloads"])


@router.get("/dl/{expires}/{sig}/{key:path}", response_class=FileResponse, responses=error_responses(403, 404))
def signed_download(key: str, expires: str, sig: str, state: Annotated[ApiState, Depends(get_state)]) -> FileResponse:
    """A stored model file or label map, as linked from `/status` and `/models` (signed links
    carry their expiry and signature in the path, so the last segment is the file name)."""
    return _serve(state, key, expires, sig)


@router.get("/files/{key:path}", response_class=FileResponse, responses=error_responses(403, 404))
def download(
    key: str,
    state: Annotated[ApiState, Depends(get_state)],
    expires: str | None = None,
    sig: str | None = None,
) -> FileResponse:
    """A stored file by a public link, or by a signed link of the earlier form (`?expires=&sig=`)."""
    return _serve(state, key, expires, sig)


def _serve(state: ApiState, key: str, expires: str | None, sig: str | None) -> FileResponse:
    store = state.store
    if not isinstance(store, LocalObjectStore):
        raise HTTPException(404, "files are served by the storage backend, not by this API")
    if not is_valid_key(key):
        raise HTTPException(404, "no such file")
    try:
        store.authorize_download(key, expires, sig)
        path = store.local_path(key)
    except LinkExpired:
        raise HTTPException(403, "this download link has expired; poll /status again for a fresh one") from None
    except LinkError:
        raise HTTPException(403, "this download link is not valid") from None
    except ObjectNotFound:
        raise HTTPException(404, "no such file") from None
    media = "application/json" if key.endswith(".json") else "application/octet-stream"
    return FileResponse(path, media_type=media, filename=key.rsplit("/", 1)[-1])
