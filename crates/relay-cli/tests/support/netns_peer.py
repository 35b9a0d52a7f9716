#!/usr/bin/env python3
"""Peers that run inside a test network namespace for the silent-cut tests
(crates/relay-cli/tests/netns_faults.rs). Each prints one line per event, flushed at once,
so the test can time what it sees.

    echo                      TCP echo server on 127.0.0.1: "listening PORT", then
                              "open N" / "closed N" (N: connections open afterwards)
    tcp-client PORT           connects to 127.0.0.1:PORT, sends "seq K" lines every
                              50 ms, prints "connected", "echo K" per line echoed back,
                              then "eof" or "error WHAT" when the connection ends
    viewer ACCESS TOKEN PING IDLE
                              a reconnecting websocket reader like a browser viewer:
                              access POST with TOKEN, then the websocket with pings every
                              PING s and a pong timeout of IDLE s (Python websockets,
                              closing handshake given 0.2 s);
                              prints "open", "msg TEXT" per message and "lost WHY"
    writer ACCESS TOKEN       a reconnecting websocket writer: sends "seq K" every 50 ms
                              while connected, printing "sent K" for each
"""

import asyncio
import json
import sys
import urllib.request


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def echo():
    open_count = 0

    async def serve(reader, writer):
        nonlocal open_count
        open_count += 1
        say(f"open {open_count}")
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            open_count -= 1
            say(f"closed {open_count}")
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    say(f"listening {server.sockets[0].getsockname()[1]}")
    async with server:
        await server.serve_forever()


async def tcp_client(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    say("connected")

    async def send():
        k = 0
        while True:
            writer.write(f"seq {k}\n".encode())
            await writer.drain()
            k += 1
            await asyncio.sleep(0.05)

    sender = asyncio.ensure_future(send())
    try:
        while True:
            line = await reader.readline()
            if not line:
                say("eof")
                break
            say("echo " + line.decode().strip().removeprefix("seq "))
    except OSError as e:
        say(f"error {e}")
    sender.cancel()


def access(url, token):
    request = urllib.request.Request(url, method="POST", headers={"Authorization": token})
    with urllib.request.urlopen(request, timeout=2) as reply:
        return json.load(reply)["uri"]


async def viewer(url, token, ping, idle):
    import websockets

    backoff = 0.2
    while True:
        try:
            uri = await asyncio.get_running_loop().run_in_executor(None, access, url, token)
            async with websockets.connect(
                uri,
                ping_interval=ping,
                ping_timeout=idle,
                open_timeout=2,
                close_timeout=0.2,
                max_size=None,
            ) as ws:
                say("open")
                backoff = 0.2
                async for message in ws:
                    if isinstance(message, bytes):
                        message = message.decode(errors="replace")
                    # One line per sequence number, even if the sender joined lines.
                    for line in message.splitlines():
                        say(f"msg {line}")
            say("lost closed")
        except Exception as e:  # any end of the link is reported, then redialled
            say(f"lost {type(e).__name__}")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 2.0)


async def writer(url, token):
    import websockets

    k = 0
    while True:
        try:
            uri = await asyncio.get_running_loop().run_in_executor(None, access, url, token)
            async with websockets.connect(uri, open_timeout=2, close_timeout=0.2) as ws:
                say("open")
                while True:
                    await ws.send(f"seq {k}")
                    say(f"sent {k}")
                    k += 1
                    await asyncio.sleep(0.05)
        except Exception as e:
            say(f"lost {type(e).__name__}")
        await asyncio.sleep(0.2)


def main():
    mode = sys.argv[1]
    if mode == "echo":
        asyncio.run(echo())
    elif mode == "tcp-client":
        asyncio.run(tcp_client(int(sys.argv[2])))
    elif mode == "viewer":
        url, token, ping, idle = sys.argv[2:6]
        asyncio.run(viewer(url, token, float(ping), float(idle)))
    elif mode == "writer":
        asyncio.run(writer(sys.argv[2], sys.argv[3]))
    else:
        say(f"error unknown mode {mode}")
        sys.exit(2)


if __name__ == "__main__":
    main()
