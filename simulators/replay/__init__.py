"""The replay simulator: a scenario's events against its job mix, once per strategy, and a report that shows
whether the site would deliver (``dcflex replay SCENARIO``)."""
