"""Hold WebSocket subscriptions to one channel, each with a user's token,
until SIGTERM: the present users of a browser test.

    python presence_holders.py BASE SECRET CHANNEL USER [USER ...]

A USER of ``-`` connects without a user (anonymous: the channel must be
readable anonymously then); a user named twice holds two connections. It
prints ``ready N`` once every connection has its ``subscribed`` frame.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from urllib.parse import urlencode

import tornado.websocket

from torchannels.tokens import encode_token


async def hold(base: str, secret: str, channel: str, users: list[str]) -> None:
    sockets = []
    for user in users:
        query = {"channel": channel}
        if user != "-":
            claims = {"exp": int(time.time()) + 3600, "channels": [channel], "sub": user}
            query["token"] = encode_token(claims, secret)
        url = base.replace("http://", "ws://", 1) + "/channels/ws?" + urlencode(query)
        conn = await tornado.websocket.websocket_connect(url)
        while True:
            text = await conn.read_message()
            if text is None:
                raise SystemExit(f"{user}: the connection closed before it subscribed")
            if json.loads(text).get("type") == "subscribed":
                break
        sockets.append(conn)
    print(f"ready {len(sockets)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for conn in sockets:
        conn.close()


if __name__ == "__main__":
    asyncio.run(hold(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
