"""WhiteNoise's middleware, able to sit in an async middleware chain.

WhiteNoise 6 is sync only: under ASGI, Django would then run every request below it (a 30 s
`Prefer: wait`, an hour-long event stream) in a thread of its own through async_to_sync. This
subclass lets async requests pass straight through; a static file is still served by
WhiteNoise's own responder (headers, compression, ranges, 304s), in a thread, its body read
there: an async response must not stream from a sync file.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware
from whitenoise.responders import StaticFile


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None, **kwargs: Any) -> None:
        super().__init__(get_response, **kwargs)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        static_file = await self._static_file(request.path_info)
        if static_file is None:
            return await self.get_response(request)
        return await sync_to_async(self._serve_read, thread_sensitive=False)(static_file, request)

    async def _static_file(self, path: str) -> StaticFile | None:
        if self.autorefresh:
            # DEBUG only: it looks on disk, so not on the event loop.
            return await sync_to_async(self.find_file, thread_sensitive=False)(path)
        return self.files.get(path)

    @staticmethod
    def _serve_read(static_file: StaticFile, request: HttpRequest) -> HttpResponse:
        """WhiteNoise's serve(), its file read whole (static files are small) into the body."""
        answer = static_file.get_response(request.method, request.META)
        body = b""
        if answer.file is not None:
            with answer.file:
                body = answer.file.read()
        response = HttpResponse(body, status=int(answer.status))
        del response["Content-Type"]
        for name, value in answer.headers:
            response[name] = value
        return response
