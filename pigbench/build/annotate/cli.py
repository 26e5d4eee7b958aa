"""``pigbench build annotate``: set up and serve the ranking web app for annotators.

    init         load the kept sets into annotate.sqlite; run it again after review changes: newly kept sets are
                 added, sets no longer kept are retired (never assigned again; their rankings stay in the
                 database) and sets kept again are offered again; settings not given keep their values;
                 prints the admin token on first use
    invite       create N annotators with secret invite codes (printed as CSV: annotator_id,invite_code)
    serve        run the app on localhost (put it behind an HTTPS reverse proxy, with --behind-proxy, to reach remote annotators)
    status       print progress: rankings submitted, annotators per set
    admin-token  replace the admin token
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

from pigbench.build.annotate.app import make_annotate_app
from pigbench.build.annotate.store import DEFAULT_SESSION_DAYS, DEFAULT_SETTINGS, AnnotationStore, ProgressSummary
from pigbench.build.sets import kept_sets
from pigbench.build.webapp import DEFAULT_CONNECTION_TIMEOUT_S, REQUEST_DEADLINE_FACTOR, serve
from pigbench.build.workspace import BuildError, Workspace, require_at_least_one


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="offer the kept sets (adding new ones, retiring those no longer kept); "
                                       "create the database on first use")
    init.add_argument("--min-sets", type=int, help=f"fewest sets per annotator (default {DEFAULT_SETTINGS['min_sets']})")
    init.add_argument("--max-sets", type=int, help=f"most sets per annotator (default {DEFAULT_SETTINGS['max_sets']})")
    init.add_argument("--seed", type=int, help=f"seed of assignments and screen orders (default {DEFAULT_SETTINGS['seed']})")
    init.add_argument("--open-signup", action=argparse.BooleanOptionalAction,
                      help="let anyone sign in with a new annotator id (ids then act as passwords: "
                           "trusted settings only; default off)")
    invite = sub.add_parser("invite", help="create annotators with invite codes")
    invite.add_argument("--count", type=int, required=True)
    invite.add_argument("--prefix", default="annotator", help="annotator id prefix (default annotator -> annotator001)")
    invite.add_argument("--out", "--output", help="also write the CSV to this file")
    run = sub.add_parser("serve", help="serve the app")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8766)
    run.add_argument("--session-days", type=float, default=DEFAULT_SESSION_DAYS,
                     help=f"sign-ins expire after this many days (default {DEFAULT_SESSION_DAYS:g})")
    run.add_argument("--connection-timeout", type=float, default=DEFAULT_CONNECTION_TIMEOUT_S, metavar="SECONDS",
                     help="close a connection that sends nothing for this long while its request is awaited, "
                          f"or that is still sending its request {REQUEST_DEADLINE_FACTOR:g} times this long after it opened "
                          f"(a client that opens a socket and stalls, or drips its request, holds a server "
                          f"thread no longer; default {DEFAULT_CONNECTION_TIMEOUT_S:g})")
    run.add_argument("--behind-proxy", action="store_true",
                     help="served behind an HTTPS reverse proxy that sets X-Forwarded-Proto: "
                          "cookies of requests it forwarded over HTTPS get Secure")
    sub.add_parser("status", help="print progress")
    sub.add_parser("admin-token", help="replace the admin token and print it")
    for action in sub.choices.values():  # `pigbench build annotate init --workdir W`, as error messages spell it
        action.add_argument("--workdir", default=argparse.SUPPRESS, help="build workspace (also accepted before STAGE)")


def main(args: argparse.Namespace) -> int:
    ws = Workspace.at(args.workdir)
    store = AnnotationStore(ws.annotate_db)
    if args.action == "init":
        sets = kept_sets(ws)
        if not sets:
            raise BuildError(f"no kept sets in {ws.root}: keep some with `pigbench build review` first")
        token = store.initialize(args.min_sets, args.max_sets, args.seed, args.open_signup)
        changes = store.sync_sets(sets)
        settings = store.settings()
        print(f"{ws.annotate_db}: {changes.added} new set(s), "
              + (f"{changes.retired} retired (no longer kept; their rankings stay in the database), "
                 if changes.retired else "")
              + (f"{changes.restored} kept again, " if changes.restored else "")
              + f"{changes.offered} kept set(s) offered; "
              f"{settings['min_sets']}-{settings['max_sets']} sets per annotator, seed {settings['seed']}, "
              f"open signup {'on' if settings['open_signup'] else 'off'}")
        if token:
            print(f"admin token (shown once; `annotate admin-token` replaces it): {token}")
        return 0
    ws.require(ws.annotate_db, "annotate init")
    if args.action == "invite":
        require_at_least_one(("--count", args.count))
        if args.out and os.path.isdir(args.out):  # checked before the invites exist, not when appending to it
            raise BuildError(f"--out {args.out} is a directory; name the CSV file to append the invites to")
        rows = store.create_invites(args.count, args.prefix)
        writer = csv.writer(sys.stdout)
        writer.writerow(["annotator_id", "invite_code"])
        writer.writerows(rows)
        if args.out:
            with open(args.out, "a", newline="", encoding="utf-8") as f:
                out = csv.writer(f)
                if f.tell() == 0:  # a new file starts with the header, as the printed CSV does
                    out.writerow(["annotator_id", "invite_code"])
                out.writerows(rows)
        return 0
    if args.action == "admin-token":
        print(store.reset_admin_token())
        return 0
    if args.action == "status":
        progress = store.progress()
        summary = ProgressSummary.of(progress)
        print(f"{summary.annotators} annotators, {summary.offered} sets"
              + (f" (and {summary.retired} retired)" if summary.retired else "")
              + f", {summary.rankings} rankings submitted"
              + (f" ({summary.retired_rankings} of retired sets, not exported)" if summary.retired_rankings else "")
              + f"; annotators per set: assigned {summary.assigned[0]}-{summary.assigned[1]}, "
              f"ranked {summary.ranked[0]}-{summary.ranked[1]}")
        for a in progress["annotators"]:
            print(f"  {a['annotator_id']}: {a['done']}/{a['assigned']}"
                  + (f" ({a['withdrawn']} withdrawn)" if a["withdrawn"] else ""))
        return 0
    store = AnnotationStore(ws.annotate_db, args.session_days)  # refuses a lifetime that is not positive
    serve(make_annotate_app(store, ws.root, args.behind_proxy), args.host, args.port, "annotation app",
          args.connection_timeout)  # refuses a timeout that is not positive
    return 0
