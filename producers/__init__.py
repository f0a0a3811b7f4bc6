"""Producers: the only way events enter the tape (venue recorders, historical and file imports).

Each venue keeps pure parsers (`payload, ts_recv -> events`) apart from its thin I/O shell;
`producers.common` holds what they share (batched appends, dead letters, import bookmarks).
"""
