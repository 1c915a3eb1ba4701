"""A stand-in for the broadcaster's continuous TS output: ``/stream/<id>/<rendition>.ts`` served from the test signal.

``python -m tests.integration.ts_standin --port P source=320x180 P144p30fps16x9=256x144`` serves, for any stream
id, one live test signal per named rendition at its size (15 fps, keyframe every second). A real process, so the
rendition nodes read a real HTTP stream; used by the P2P tests where the broadcaster itself is not needed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from swarmcast.media.testsignal import TestSignalBroadcaster, TestSignalConfig

FPS = 15


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("renditions", nargs="+", metavar="NAME=WxH")
    args = parser.parse_args()
    sizes = {}
    for item in args.renditions:
        name, _, size = item.partition("=")
        width, _, height = size.partition("x")
        sizes[name] = (int(width), int(height))
    asyncio.run(serve(args.host, args.port, sizes))


async def serve(host: str, port: int, sizes: dict[str, tuple[int, int]]) -> None:
    signals = {name: TestSignalBroadcaster(TestSignalConfig(bitrate=300_000, width=w, height=h, fps=FPS))
               for name, (w, h) in sizes.items()}  # fmt: skip

    async def stream(request: web.Request) -> web.StreamResponse:
        broadcaster = signals.get(request.match_info["rendition"])
        if broadcaster is None:
            raise web.HTTPNotFound
        response = web.StreamResponse(headers={"Content-Type": "video/mp2t"})
        await response.prepare(request)
        with broadcaster.subscribe() as sub:
            try:
                async for data in sub:
                    await response.write(data)
            except ConnectionError:
                pass
        return response

    app = web.Application()
    app.router.add_get("/stream/{stream}/{rendition}.ts", stream)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        for broadcaster in signals.values():
            broadcaster.start()
        await web.TCPSite(runner, host, port).start()
        await stop.wait()
    finally:
        for broadcaster in signals.values():
            await broadcaster.close()
        await runner.cleanup()


if __name__ == "__main__":
    main()
