"""Seed 000's scheduled reports: the weekly performance review and the monthly growth analysis.

queries (READ ONLY, with a statement timeout, against the monitored database, at a given `now`) ->
charts (PNG, matplotlib's Agg canvas) -> render (HTML with `cid:` images and a text part for email,
or one HTML file with the images inline) -> mail (one outbox row per period and channel)."""
