"""Stage 4, ``pigbench build review``: a local page where the curator keeps or drops each set.

Drop sets of low quality and sets whose four variants would not split people's preferences; a
drop needs a reason. Every decision is appended to ``review.jsonl`` at once (the last one per
set wins). ``--set ID --decision keep|drop --reason TEXT`` records a decision without the page;
``--summary`` prints the counts. The page has no sign-in: served on a loopback address it answers
only to a loopback Host (no DNS rebinding by a web page the curator visits).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

from pigbench.build.sets import decisions, record_decision, rendered_sets
from pigbench.build.webapp import HTTPError, Request, Router, Templates, file_response, json_response, serve
from pigbench.build.workspace import BuildError, Workspace

REASONS = ("low image quality", "variants too similar to split preferences", "image does not match its prompt",
           "unsafe or offensive content", "good spread of styles and contexts")


def make_review_app(ws: Workspace, local_only: bool = True) -> Router:
    """The review page and its API, over ``ws``; with ``local_only`` (it has no sign-in) only for a Host
    of localhost or 127.x (see :class:`~pigbench.build.webapp.Router`)."""
    app, templates = Router(local_only), Templates()

    def sets_by_id():
        return {s.set_id: s for s in rendered_sets(ws)}

    @app.route("GET", "/")
    def page(request: Request):
        sets, latest = rendered_sets(ws), decisions(ws)
        counts = Counter(latest[s.set_id]["decision"] for s in sets if s.set_id in latest)
        return templates.render("review.html", sets=sets, latest=latest, reasons=REASONS,
                                kept=counts["keep"], dropped=counts["drop"], total=len(sets))

    @app.route("GET", "/api/sets")
    def api_sets(request: Request):
        latest = decisions(ws)
        return json_response([{**s.to_json(), "decision": latest.get(s.set_id)} for s in rendered_sets(ws)])

    @app.route("POST", "/api/decisions")
    def api_decide(request: Request):
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("set_id"), str):
            raise HTTPError(400, "send {set_id, decision, reason}")
        known = set(sets_by_id())
        if body["set_id"] not in known:
            raise HTTPError(404, f"no rendered set {body['set_id']!r}")
        try:
            entry = record_decision(ws, body["set_id"], str(body.get("decision", "")), str(body.get("reason", "")),
                                    known)
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from exc
        return json_response(entry)

    @app.route("GET", r"/images/(?P<set_id>[a-z0-9-]+)/(?P<index>[0-3])\.png")
    def image(request: Request):
        found = sets_by_id().get(request.params["set_id"])
        if found is None:
            raise HTTPError(404, "no such set")
        return file_response(ws.root / found.images[int(request.params["index"])])

    return app


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--summary", action="store_true", help="print the decision counts and exit")
    p.add_argument("--set", dest="set_id", help="record a decision for this set id without the page")
    p.add_argument("--decision", choices=["keep", "drop"])
    p.add_argument("--reason", default="")


def main(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workdir)
    if args.set_id or args.decision:
        if not (args.set_id and args.decision):
            raise BuildError("--set and --decision go together")
        try:
            entry = record_decision(ws, args.set_id, args.decision, args.reason)
        except ValueError as exc:
            raise BuildError(str(exc)) from exc
        print(f"{entry['set_id']}: {entry['decision']} ({entry['reason'] or 'no reason given'})")
        return 0
    sets, latest = rendered_sets(ws), decisions(ws)
    if args.summary:
        counts = Counter(latest[s.set_id]["decision"] if s.set_id in latest else "undecided" for s in sets)
        print(f"{len(sets)} rendered sets: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return 0
    if not sets:
        raise BuildError(f"no rendered sets in {ws.root}: run `pigbench build render` first")
    local = bool(re.fullmatch(r"127\.\d+\.\d+\.\d+|localhost|::1", args.host))
    if not local:
        print(f"warning: serving on {args.host}, reachable beyond this machine; the review page has no sign-in")
    serve(make_review_app(ws, local_only=local), args.host, args.port, f"review page for {len(sets)} sets")
    return 0
