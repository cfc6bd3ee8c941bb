"""``tuner dashboard``: a read-only web view of studies, their trials and the front (aiohttp).

Data flows one way, as in the rest of tuner: storage (opened read-only, :mod:`tuner.web.readonly`) ->
a shared cache refreshed once per interval whatever the number of open pages (:mod:`tuner.web.cache`,
reading through :mod:`tuner.search.record` and :mod:`tuner.report`) -> page models (:mod:`tuner.web.views`,
pure) -> HTML (:mod:`tuner.web.html`, pure) and the plot's figure (:mod:`tuner.web.plot`, pure) -> routes
and the access rule (:mod:`tuner.web.app`). Scripts and styles are served from ``tuner/web/static`` and
plotly.js from the installed plotly package: nothing is fetched from the internet. See docs/dashboard.md.
"""
