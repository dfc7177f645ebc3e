"""Downloads of the local storage backend: signed, expiring links (or public ones if configured)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from ghostouch.api.state import ApiState, get_state
from ghostouch.storage import LinkError, LinkExpired, LocalObjectStore, ObjectNotFound, is_valid_key

router = APIRouter(tags=["downloads"])


@router.get("/files/{key:path}", response_class=FileResponse)
def download(
    key: str,
    state: Annotated[ApiState, Depends(get_state)],
    expires: str | None = None,
    sig: str | None = None,
) -> FileResponse:
    """A stored model file or label map, as linked from `/status` and `/models`."""
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
