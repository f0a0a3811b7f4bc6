"""A live run's default topics fit the tape on its first start and stay those on a restart (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from robots.api import RobotError
from robots.live.runner import LiveRunner
from robots.sources import TopicChoiceError
from tests.conftest import make_trades
from ticktape.tape import open_tape


def test_first_start_fits_a_restart_keeps_and_several_stop(tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'tape'}"
    with open_tape(uri) as tape:
        tape.append("md.binance.trade", make_trades(10))
    first = LiveRunner("ema_cross", tape=uri, run_id="r1", gateway="inline")
    assert first.topics == ("md.binance.trade",)
    first.start()
    first.close()
    with open_tape(uri) as tape:
        tape.append("md.okx.trade", make_trades(10))
    again = LiveRunner("ema_cross", tape=uri, run_id="r1", gateway="inline")
    assert again.topics == ("md.binance.trade",)  # the first start's inputs, although two trade topics now
    again.start()
    assert again.restarted
    again.close()
    with pytest.raises(TopicChoiceError, match=r"md\.binance\.trade, md\.okx\.trade; pick one with --topics"):
        LiveRunner("ema_cross", tape=uri, run_id="r2", gateway="inline")
    chosen = LiveRunner("ema_cross", tape=uri, run_id="r2", gateway="inline", topics=["md.okx.trade"])
    assert chosen.topics == ("md.okx.trade",)
    chosen.close()
    other = LiveRunner("ema_cross", tape=uri, run_id="r1", gateway="inline", topics=["md.okx.trade"])
    with pytest.raises(RobotError, match=r"was started on topics md\.binance\.trade"):
        other.start()
    other.close()
