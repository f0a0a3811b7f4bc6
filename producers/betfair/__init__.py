"""Betfair producer: historical stream files and the live Exchange Stream API onto the tape.

`parse` (pure decoding of stream messages), `cache` (market book state), `orders`, `definition`
and `catalogue` are pure; `historical` (file import) and `live` (recorder) are the I/O shells.
"""
