#!/usr/bin/env python3
"""An independent websocket reader for the frame tests (crates/relay-cli/tests/frames_e2e.rs).

It uses Python `websockets` (Debian: python3-websockets), which is strict about framing: a
masked server frame, a reserved bit, bad UTF-8 in a text frame, a bad close code or a
control frame over 125 bytes fails the connection. It connects to URL and prints, one line
each, flushed at once:

    open
    text <length> <sha256 hex>      (for every text message; length in UTF-8 bytes)
    binary <length> <sha256 hex>    (for every binary message)
    close <code> <reason>           (the close frame the relay sent; "close none" if none)
    error <what>                    (anything else that ended the connection; exit 2)

With --delay-ms N it sleeps N ms after each message: a reader too slow for its writer.
"""

import argparse
import asyncio
import hashlib
import sys

import websockets


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def read(url, delay_ms):
    # No size limit (the tests send 10 MiB); no pings of our own (the relay's are answered).
    async with websockets.connect(url, max_size=None, ping_interval=None, compression=None) as ws:
        say("open")
        try:
            while True:
                message = await ws.recv()
                if isinstance(message, str):
                    data = message.encode("utf-8")
                    kind = "text"
                else:
                    data = message
                    kind = "binary"
                say(f"{kind} {len(data)} {hashlib.sha256(data).hexdigest()}")
                if delay_ms:
                    await asyncio.sleep(delay_ms / 1000)
        except websockets.exceptions.ConnectionClosed as closed:
            received = closed.rcvd
            if received is None:
                say("close none")
            else:
                say(f"close {received.code} {received.reason}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--delay-ms", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(read(args.url, args.delay_ms))
    except Exception as e:  # report, do not hide: the test prints this line
        say(f"error {type(e).__name__}: {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
