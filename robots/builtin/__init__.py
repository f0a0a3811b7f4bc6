"""Built-in robots: `ema_cross`, `market_maker`, `betfair_lay_lowest`, `betfair_back_favourite`."""
