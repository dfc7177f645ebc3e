"""Downloads through the API: signed, expiring links for every storage backend, and public
links of the local backend (`GHOSTOUCH_PUBLIC_LINKS`; Firebase's public links name the bucket)."""

from __future__ import annotations

import hashlib
import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, Response
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from ghostouch.api.errors import error_responses
from ghostouch.api.state import ApiState, get_state
from ghostouch.storage import LinkError, LinkExpired, LocalObjectStore, ObjectNotFound, is_valid_key

router = APIRouter(tags=["downloads"])

# What a download may answer besides the whole file and the errors.
CACHE_AND_RANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    206: {"description": "one byte range of the file, for a `Range: bytes=...` request (`If-Range` honoured)"},
    304: {"description": "the client's copy is current (`If-None-Match` names the file's ETag)"},
}


class StoredFileResponse(FileResponse):
    """A stored file with HTTP's range rules as RFC 9110 (14.2) has them: a Range header that is
    not a valid byte range (another unit, a reversed range) is ignored and the whole file sent,
    where Starlette answered 400 in plain text."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # no range: the whole file


@router.get(
    "/dl/{expires}/{sig}/{key:path}",
    response_class=FileResponse,
    responses={**CACHE_AND_RANGE_RESPONSES, **error_responses(403, 404, 503)},
)
def signed_download(
    request: Request, key: str, expires: str, sig: str, state: Annotated[ApiState, Depends(get_state)]
) -> Response:
    """A stored model file or label map, as linked from `/status` and `/models` (signed links
    carry their expiry and signature in the path, so the last segment is the file name)."""
    return _serve(request, state, key, expires, sig)


@router.get(
    "/files/{key:path}",
    response_class=FileResponse,
    responses={**CACHE_AND_RANGE_RESPONSES, **error_responses(403, 404)},
)
def download(
    request: Request,
    key: str,
    state: Annotated[ApiState, Depends(get_state)],
    expires: str | None = None,
    sig: str | None = None,
) -> Response:
    """A stored file by a public link, or by a signed link of the earlier form (`?expires=&sig=`)."""
    return _serve(request, state, key, expires, sig)


def _serve(request: Request, state: ApiState, key: str, expires: str | None, sig: str | None) -> Response:
    store = state.store
    if not is_valid_key(key):
        raise HTTPException(404, "no such file")
    try:
        store.authorize_download(key, expires, sig)
        media = "application/json" if key.endswith(".json") else "application/octet-stream"
        name = key.rsplit("/", 1)[-1]
        found: Response | None = None
        if isinstance(store, LocalObjectStore):
            path = store.local_path(key)
            found = StoredFileResponse(path, media_type=media, filename=name, stat_result=os.stat(path))
            etag = found.headers["etag"]
        else:
            # A bucket: the API relays the file (a model is about 200 KB), so that the link's last
            # segment is the file name (StorageError: 503, `errors.storage_error`). A key is written
            # once (versions get fresh keys), so its ETag comes from the key: a client that holds
            # the file hears 304 without the bucket being read, or having to answer.
            etag = f'"{hashlib.sha256(key.encode()).hexdigest()[:32]}"'
        if _client_has(request, etag):  # its copy is this one
            return Response(status_code=304, headers={"ETag": etag})
        return found or _relayed(request, store.get_bytes(key), media, name, etag)
    except LinkExpired:
        raise HTTPException(403, "this download link has expired; poll /status again for a fresh one") from None
    except LinkError:
        raise HTTPException(403, "this download link is not valid") from None
    except (ObjectNotFound, FileNotFoundError):
        raise HTTPException(404, "no such file") from None


def _relayed(request: Request, content: bytes, media: str, name: str, etag: str) -> Response:
    """A file fetched from a bucket, answered by the local files' rules: one byte range (206), a
    range beyond the end (416), anything else whole (several ranges too, which RFC 9110 allows)."""
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "ETag": etag, "Accept-Ranges": "bytes"}
    asked, if_range = request.headers.get("range"), request.headers.get("if-range")
    if asked is None or (if_range is not None and if_range != etag):
        return Response(content, media_type=media, headers=headers)
    try:
        ranges = StoredFileResponse._parse_range_header(asked, len(content))
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{len(content)}", "ETag": etag})
    if len(ranges) != 1:
        return Response(content, media_type=media, headers=headers)
    start, end = ranges[0]  # end exclusive
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(content)}"
    return Response(content[start:end], status_code=206, media_type=media, headers=headers)


def _client_has(request: Request, etag: str) -> bool:
    """Whether the request's If-None-Match names this version of the file (weak comparison)."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags
