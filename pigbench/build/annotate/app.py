"""The annotation web app (WSGI): sign-in, ranking pages, a JSON API and the admin view.

Access rules, enforced on the server for every request:

* An annotator session (cookie ``pb_session``, HttpOnly, SameSite=Strict, Secure over HTTPS,
  random token whose hash is in the database, expiring ``session_days`` after sign-in: then the
  pages show the sign-in page again) is needed for the task page, images and the ranking API. The
  annotator's id always comes from the session, never from the request.
* Images are served by screen slot (``/img/<set>/<slot>``) and only for sets assigned to the
  signed-in annotator; rankings can be read only by their author (``/api/annotators/<id>/rankings``
  answers 403 for anyone else); a ranking is accepted only for one's own assigned set, once,
  and only if it is a valid ordering of the four images (400 with the reason otherwise).
* A set retired after it was assigned (no longer kept in review, see ``annotate init``) leaves the
  annotator's list unless they ranked it: the task page moves on to their next set and counts
  "Set k of n" without it, noting how many were withdrawn; it is replaced (on loading the task page,
  or at sign-in) by an offered set they do not have, while one is left, up to their share, and once replaced it stays
  withdrawn from them even if the set is kept again; a ranking of it sent from a page
  still open is not stored (410, and the page moves on).
* A POST from another site's page is refused (``Sec-Fetch-Site``, see :mod:`pigbench.build.webapp`).
* The admin view and exports need an admin session (cookie ``pb_admin``) opened with the admin
  token that ``pigbench build annotate init`` printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from pigbench.build.annotate.store import AccessDenied, AlreadySubmitted, AnnotationStore, ProgressSummary, SetRetired
from pigbench.build.ranking import SET_SIZE, InvalidRanking
from pigbench.build.webapp import (
    HTTPError,
    Request,
    Response,
    Router,
    Templates,
    file_response,
    json_response,
    redirect,
)
from pigbench.build.workspace import file_sha256

SESSION_COOKIE = "pb_session"
ADMIN_COOKIE = "pb_admin"
SLOT_NAMES = "ABCD"


def make_annotate_app(store: AnnotationStore, root: Path, behind_proxy: bool = False) -> Router:
    """The app over ``store``; image paths in the store are relative to ``root``. ``behind_proxy``:
    served behind an HTTPS reverse proxy that sets ``X-Forwarded-Proto`` (cookies get Secure)."""
    app, templates = Router(behind_proxy=behind_proxy), Templates()
    root = root.resolve()

    def annotator(request: Request) -> Optional[str]:
        return store.session(request.cookies.get(SESSION_COOKIE), "annotator")

    def require_annotator(request: Request) -> str:
        who = annotator(request)
        if who is None:
            raise HTTPError(401, "sign in first")
        return who

    def require_admin(request: Request) -> None:
        if store.session(request.cookies.get(ADMIN_COOKIE), "admin") is None:
            raise HTTPError(403, "this needs the admin sign-in")

    @app.route("GET", "/")
    def home(request: Request) -> Response:
        if annotator(request):
            return redirect("/task")
        return templates.render("signin.html", error=None, open_signup=bool(store.settings().get("open_signup")))

    @app.route("POST", "/signin")
    def sign_in(request: Request) -> Response:
        token = store.sign_in(request.form().get("credential", ""))
        if token is None:
            return templates.render("signin.html", status=401, error="This code is not valid.",
                                    open_signup=bool(store.settings().get("open_signup")))
        return redirect("/task").set_cookie(SESSION_COOKIE, token, secure=request.secure)

    @app.route("POST", "/signout")
    def sign_out(request: Request) -> Response:
        for name in (SESSION_COOKIE, ADMIN_COOKIE):
            if request.cookies.get(name):
                store.sign_out(request.cookies[name])
        return (redirect("/").set_cookie(SESSION_COOKIE, "", max_age=0, secure=request.secure)
                .set_cookie(ADMIN_COOKIE, "", max_age=0, secure=request.secure))

    @app.route("GET", "/task")
    def task(request: Request) -> Response:
        who = annotator(request)
        if who is None:
            return redirect("/")
        store.top_up(who)  # replaces sets retired since sign-in
        assigned, withdrawn_sets = store.assignments_and_withdrawn(who)
        withdrawn = len(withdrawn_sets)
        done = sum(a.ranks is not None for a in assigned)
        current = next((a for a in assigned if a.ranks is None), None)
        if current is None:
            return templates.render("done.html", annotator_id=who, total=len(assigned), withdrawn=withdrawn)
        data = {"set_id": current.set_id, "slots": SET_SIZE, "done": done, "total": len(assigned)}
        return templates.render("task.html", annotator_id=who, current=current, done=done, total=len(assigned),
                                withdrawn=withdrawn, slot_names=SLOT_NAMES, data=json.dumps(data))

    @app.route("GET", r"/img/(?P<set_id>[a-z0-9-]+)/(?P<slot>[0-3])")
    def image(request: Request) -> Response:
        who = require_annotator(request)
        try:
            a = store.assignment(who, request.params["set_id"])
        except AccessDenied as exc:
            raise HTTPError(403, str(exc)) from exc
        path = (root / a.images[a.display_order[int(request.params["slot"])]]).resolve()
        if root not in path.parents:
            raise HTTPError(404, "file not found")
        return file_response(path)

    @app.route("POST", "/api/rankings")
    def submit(request: Request) -> Response:
        who = require_annotator(request)
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("set_id"), str):
            raise HTTPError(400, "send {set_id, ranks}")
        try:
            images = store.assignment(who, body["set_id"]).images
            shown = [file_sha256(root / rel) if (root / rel).is_file() else None for rel in images]  # as /img serves
            store.submit(who, body["set_id"], body.get("ranks"), body.get("elapsed_ms"), shown)
        except AccessDenied as exc:
            raise HTTPError(403, str(exc)) from exc
        except AlreadySubmitted as exc:
            raise HTTPError(409, str(exc)) from exc
        except SetRetired as exc:
            raise HTTPError(410, str(exc)) from exc
        except InvalidRanking as exc:
            raise HTTPError(400, f"ranking refused: {exc}") from exc
        assigned = store.assignments(who)
        return json_response({"ok": True, "done": sum(a.ranks is not None for a in assigned),
                              "total": len(assigned), "next": "/task"})

    @app.route("GET", "/api/me")
    def me(request: Request) -> Response:
        who = require_annotator(request)
        assigned = store.assignments(who)
        return json_response({"annotator_id": who, "total": len(assigned),
                              "done": sum(a.ranks is not None for a in assigned),
                              "sets": [a.set_id for a in assigned]})

    @app.route("GET", r"/api/annotators/(?P<annotator_id>[^/]+)/rankings")
    def rankings_of(request: Request) -> Response:
        who = require_annotator(request)
        if request.params["annotator_id"] != who:
            raise HTTPError(403, "you can read only your own rankings")
        return json_response(store.own_rankings(who))

    @app.route("GET", "/admin")
    def admin(request: Request) -> Response:
        if store.session(request.cookies.get(ADMIN_COOKIE), "admin") is None:
            return templates.render("admin_signin.html", error=None)
        progress = store.progress()
        return templates.render("admin.html", progress=progress, summary=ProgressSummary.of(progress),
                                settings=store.settings())

    @app.route("POST", "/admin/signin")
    def admin_sign_in(request: Request) -> Response:
        token = store.admin_sign_in(request.form().get("token", ""))
        if token is None:
            return templates.render("admin_signin.html", status=401, error="Wrong admin token.")
        return redirect("/admin").set_cookie(ADMIN_COOKIE, token, secure=request.secure)

    @app.route("GET", "/admin/api/progress")
    def admin_progress(request: Request) -> Response:
        require_admin(request)
        return json_response(store.progress())

    @app.route("GET", r"/admin/export/rankings\.jsonl")
    def admin_export(request: Request) -> Response:
        require_admin(request)
        body = "".join(json.dumps(r) + "\n" for r in store.all_rankings()).encode()
        return Response(body, 200, "application/x-ndjson",
                        [("Content-Disposition", 'attachment; filename="rankings.jsonl"')])

    return app
